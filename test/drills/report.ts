import { INVARIANT_NAMES, RETRY_RESOLVED_WITHIN_MS, type InvariantId } from './checks.js';
import { failures, type DrillResult } from './harness.js';

const ms = (v: number | null) => (v === null ? '—' : v < 1000 ? `${v} ms` : `${(v / 1000).toFixed(1)} s`);

function invariantCell(result: DrillResult, id: InvariantId): string {
  const i = result.invariants.find((x) => x.id === id);
  if (!i) return result.error ? 'n/a' : '?';
  return i.ok ? 'pass' : `FAIL(${i.violations.length})`;
}

function retryCell(result: DrillResult): string {
  const r = result.retries;
  if (!r) return 'n/a';
  const worst = r.unacknowledged === 0 ? '0' : ms(r.worstMs);
  return r.late.length === 0 ? worst : `FAIL(${r.late.length}) ${worst}`;
}

function reconcileCell(result: DrillResult): string {
  const r = result.reconcile;
  if (!r) return 'n/a';
  return r.ok ? 'pass' : 'FAIL';
}

function healedCell(result: DrillResult): string {
  const r = result.reconcile;
  if (!r) return 'n/a';
  return r.ok ? ms(r.healedAfterMs) : 'never';
}

/** The operator's table: one row per drill, then every failure spelled out. */
export function formatTable(results: readonly DrillResult[]): string {
  const ids: InvariantId[] = ['I1', 'I2', 'I3', 'I4', 'I5', 'I6', 'API'];
  const header = ['drill', 'requests', 'acks', 'faults', 'recovery', 'ready', 'retried', 'retry', 'unresolved', 'crashes', ...ids, 'redis=pg', 'healed'];
  const rows = results.map((r) => [
    r.drill,
    String(r.requests),
    String(r.acks),
    String(r.faults),
    ms(r.recoveryMs),
    ms(r.readyMs),
    r.retries ? String(r.retries.unacknowledged) : 'n/a',
    retryCell(r),
    String(r.unresolvedKeys),
    r.crashes.length === 0 ? '0' : `FAIL(${r.crashes.length})`,
    ...ids.map((id) => invariantCell(r, id)),
    reconcileCell(r),
    healedCell(r),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  const line = (cells: string[]) => cells.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  const out = [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
  out.push(
    '',
    `recovery: fault injected → first reservation acknowledged for a request sent after it; ready: → every running node ready again`,
    `faults: 5xx answers and network errors the clients saw; unresolved: keys whose client gave up without a definitive answer`,
    `retried: creates answered 5xx, not at all, or 409 in use, then retried with the same key and body; retry: the longest ` +
      `any took to a definitive answer after recovery (ready, or its first such answer if later); FAIL over ${RETRY_RESOLVED_WITHIN_MS / 1000} s`,
    `crashes: API processes that exited on their own (restarted by the drill's supervisor)`,
    ids.map((id) => `${id} ${INVARIANT_NAMES[id]}`).join(' · '),
    `redis=pg: a reconciliation dry run reports nothing (no drift, orphaned hold or stranded stock intent); no repair pass is run`,
    `healed: load drained and checked → first clean dry run, the nodes' own reconcilers healing meanwhile (0: nothing left by then)`,
  );
  for (const r of results) {
    const notes = [
      ...failures(r, 10),
      ...(r.reconcile?.ok ? r.reconcile.details : []),
      ...(r.reconcile && (r.reconcile.corrections > 0 || r.reconcile.voided > 0)
        ? [
            `the nodes corrected Redis ${r.reconcile.corrections} times (stock_corrections) and voided ${r.reconcile.voided} stock ` +
              `decisions, the last ${ms(r.reconcile.lastRepairAfterFaultMs)} after the fault`,
          ]
        : []),
      ...r.notes.map((n) => `note: ${n}`),
    ];
    if (notes.length === 0) continue;
    out.push('', `${r.drill} (seed ${r.seed}, fault at ${r.faultAt ?? '—'}${r.logDir ? `, API logs in ${r.logDir}` : ''}):`);
    for (const n of notes) out.push(`  ${n}`);
  }
  return out.join('\n');
}
