/** Tables for the terminal (and the README), and the files a run leaves in bench/results/. */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderChart } from './chart.js';
import type { BenchReport, RedisNodeCpu, SoakReport } from './harness.js';
import type { Machine } from './probes.js';

function table(header: string[], rows: (string | number | null)[][]): string {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === null ? '-' : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  // Numbers right-aligned, words left-aligned (GitHub renders the same from the separator row).
  const numeric = header.map((_, i) => rows.length > 0 && cells.slice(1).every((r) => /^[-\d.,/% x]+$/.test(r[i]!)));
  const line = (r: string[]) => `| ${r.map((c, i) => (numeric[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:|` : `${'-'.repeat(w + 2)}|`)).join('')}`;
  return [line(cells[0]!), rule, ...cells.slice(1).map(line)].join('\n');
}

/** The machine line cut at its semicolons into lines short enough for the chart's subtitle. */
function machineLines(m: Machine): string[] {
  const lines: string[] = [];
  for (const part of machineLine(m).split('; ')) {
    const last = lines.at(-1);
    if (last !== undefined && last.length + part.length < 110) lines[lines.length - 1] = `${last}; ${part}`;
    else lines.push(part);
  }
  return lines;
}

export function machineLine(m: Machine): string {
  const pg = m.postgres.settings;
  return (
    `${m.cores} × ${m.cpuModel}, ${m.memoryGiB} GiB, ${m.kernel}; Node ${m.node}; Redis ${m.redis.version} (appendonly ${m.redis.appendonly}); ` +
    `PostgreSQL ${m.postgres.version} (fsync ${pg.fsync ?? '?'}, synchronous_commit ${pg.synchronous_commit ?? '?'}, wal_sync_method ${pg.wal_sync_method ?? '?'}, autovacuum ${pg.autovacuum ?? '?'}${pg.autovacuum === 'off' ? ': the bench runs VACUUM ANALYZE before each scenario' : ''}); ` +
    `autocannon ${m.autocannon}; service, Redis, PostgreSQL and load generator share the machine` +
    (m.git ? `; commit ${m.git.commit.slice(0, 10)}${m.git.dirty ? ' (src modified)' : ''}` : '')
  );
}

export function formatReport(r: BenchReport): string {
  const out: string[] = [];
  out.push(`Machine: ${machineLine(r.machine)}`);
  out.push(`Passes: ${r.options.passes} × ${r.options.durationSeconds} s per scenario (medians of passes; outcome counts summed)`);
  out.push('"sale": until the flash SKU sold out (the whole run where it did not); ratios and targets use it.', '');
  out.push(
    table(
      [
        'scenario',
        'design',
        'conns',
        'sale req/s',
        'sale p50',
        'sale p99',
        'sold out s',
        'req/s',
        'writes/s',
        'p50 ms',
        'p95 ms',
        'p99 ms',
        'max ms',
        'reserve p99',
        '201',
        '200',
        '409 stock',
        '503 shed',
        'other',
        'cpu svc/redis/pg/gen/other %',
        'invariants',
      ],
      r.summary.map((s) => [
        s.scenario,
        s.design,
        s.connections,
        Math.round(s.sale.throughput),
        s.sale.p50,
        s.sale.p99,
        s.soldOutAtSeconds,
        Math.round(s.throughput),
        Math.round(s.writesPerSecond),
        s.latencyMs.p50,
        s.latencyMs.p95,
        s.latencyMs.p99,
        s.latencyMs.max,
        s.reserveLatencyMs?.p99 ?? null,
        s.outcomes.created,
        s.outcomes.ok,
        s.outcomes.insufficient,
        s.outcomes.shed,
        s.outcomes.other,
        `${s.cpuPercent.service ?? '-'}/${s.cpuPercent.redis ?? '-'}/${s.cpuPercent.postgres ?? '-'}/${s.cpuPercent.generator}/${s.cpuPercent.other ?? '-'}`,
        s.invariantsOk ? 'ok' : 'FAILED',
      ]),
    ),
  );
  if (r.ratios.some((x) => x.durableOverPgOnly !== null || x.durableOverRedisOnly !== null)) {
    out.push('', 'Ratios (sale; median over passes of the ratio within each pass):', '');
    out.push(
      table(
        ['scenario', 'durable / pg-only req/s', 'pg-only p99 / durable p99', 'durable / redis-only req/s'],
        r.ratios.map((x) => [x.scenario, x.durableOverPgOnly, x.pgOnlyP99OverDurableP99, x.durableOverRedisOnly]),
      ),
    );
  }
  const beyond = r.summary.filter((s) => s.design === 'durable' || s.design === 'durable-unbounded').filter((s) => r.saturation.some((x) => x.scenario === s.scenario));
  if (beyond.length > 0) {
    out.push('', 'Beyond saturation (WRITER_MAX_QUEUE on: durable; off: durable-unbounded; medians of passes):', '');
    out.push(
      table(
        ['scenario', 'design', 'conns', '201/s', 'writes/s', 'p99 2xx ms', 'p99 shed ms', 'shed %', 'in service 2xx/503 ms', 'cpu µs/write svc/redis/pg'],
        beyond.map((s) => [
          s.scenario,
          s.design,
          s.connections,
          Math.round(s.createdPerSecond),
          Math.round(s.writesPerSecond),
          s.answeredP99Ms.ok,
          s.answeredP99Ms.shed,
          Math.round(s.shedPercent * 10) / 10,
          `${s.serviceMsMean.ok ?? '-'}/${s.serviceMsMean.unavailable ?? '-'}`,
          `${s.cpuMicrosPerWrite.service ?? '-'}/${s.cpuMicrosPerWrite.redis ?? '-'}/${s.cpuMicrosPerWrite.postgres ?? '-'}`,
        ]),
      ),
    );
    out.push('', 'Bound on against off (median over passes of the ratio within each pass):', '');
    out.push(
      table(
        ['scenario', '201/s on / off', 'p99 2xx off / on', 'in-service 2xx off / on', 'service cpu per write on / off'],
        r.saturation.map((x) => [
          x.scenario,
          x.createdBoundedOverUnbounded,
          x.okP99UnboundedOverBounded,
          x.serviceOkMeanUnboundedOverBounded,
          x.serviceCpuBoundedOverUnbounded,
        ]),
      ),
    );
  }
  out.push('', 'What each acknowledged write cost (the sale, medians of passes): CPU per process, and what the service allocated per answer:', '');
  out.push(
    table(
      ['scenario', 'design', 'cpu µs/write service', 'redis', 'postgres', 'total', 'KiB allocated/request'],
      r.summary.map((s) => {
        const c = s.saleCost.cpuMicrosPerWrite;
        const parts = [c.service, c.redis, c.postgres];
        return [s.scenario, s.design, c.service, c.redis, c.postgres, parts.every((x) => x !== null) ? Math.round(parts.reduce((a, b) => a! + b!, 0)!) : null, s.allocatedKiBPerRequest];
      }),
    ),
  );
  const outbox = r.summary.filter((s) => (s.design === 'durable' || s.design === 'durable-no-outbox') && r.outbox.some((x) => x.scenario === s.scenario));
  if (outbox.length > 0) {
    out.push('', 'What the outbox costs (durable: events appended in the batch statement; durable-no-outbox: without them). The sale, medians of passes:', '');
    out.push(
      table(
        ['scenario', 'design', 'sale req/s', 'sale p99 ms', 'cpu µs/write svc/redis/pg', 'WAL bytes/write', 'events/write'],
        outbox.map((s) => [
          s.scenario,
          s.design,
          Math.round(s.sale.throughput),
          s.sale.p99,
          `${s.saleCost.cpuMicrosPerWrite.service ?? '-'}/${s.saleCost.cpuMicrosPerWrite.redis ?? '-'}/${s.saleCost.cpuMicrosPerWrite.postgres ?? '-'}`,
          s.saleCost.walBytesPerWrite,
          s.saleCost.eventsPerWrite,
        ]),
      ),
    );
    out.push('', 'durable / durable-no-outbox (the sale; median over passes of the ratio within each pass):', '');
    out.push(
      table(
        ['scenario', 'req/s', 'p99', 'cpu/write service', 'cpu/write redis', 'cpu/write postgres', 'WAL bytes/write'],
        r.outbox.map((x) => [x.scenario, x.throughput, x.p99, x.cpuMicrosPerWrite.service, x.cpuMicrosPerWrite.redis, x.cpuMicrosPerWrite.postgres, x.walBytesPerWrite]),
      ),
    );
  }
  const cluster = r.summary.filter((s) => (s.design === 'durable' || s.design === 'durable-cluster') && r.cluster.some((x) => x.scenario === s.scenario));
  if (cluster.length > 0) {
    out.push('', 'Redis Cluster (durable-cluster: 3 masters + 3 replicas) against one Redis (durable). The sale, medians of passes:', '');
    out.push(
      table(
        ['scenario', 'design', 'sale req/s', 'sale p99 ms', 'cpu µs/write svc/redis/pg', 'cpu % svc/redis/pg', 'redis cpu % per node'],
        cluster.map((s) => [
          s.scenario,
          s.design,
          Math.round(s.sale.throughput),
          s.sale.p99,
          `${s.saleCost.cpuMicrosPerWrite.service ?? '-'}/${s.saleCost.cpuMicrosPerWrite.redis ?? '-'}/${s.saleCost.cpuMicrosPerWrite.postgres ?? '-'}`,
          `${s.cpuPercent.service ?? '-'}/${s.cpuPercent.redis ?? '-'}/${s.cpuPercent.postgres ?? '-'}`,
          s.redisNodes ? redisNodesLine(s.redisNodes) : 'one process',
        ]),
      ),
    );
    out.push('', 'durable-cluster / durable (the sale; median over passes of the ratio within each pass):', '');
    out.push(
      table(
        ['scenario', 'req/s', 'p99', 'cpu/write service', 'cpu/write redis', 'cpu/write postgres'],
        r.cluster.map((x) => [x.scenario, x.throughput, x.p99, x.cpuMicrosPerWrite.service, x.cpuMicrosPerWrite.redis, x.cpuMicrosPerWrite.postgres]),
      ),
    );
  }
  if (r.targets.length > 0) {
    out.push('', 'Issue 3 targets (flash sale, 64 connections):', '');
    out.push(table(['target', 'measured', 'met'], r.targets.map((t) => [t.target, t.measured, t.met ? 'yes' : 'no'])));
  }
  out.push('', `Invariants: ${r.invariantsOk ? 'held in every run' : 'FAILED (see runs[].invariants in latest.json)'}`);
  return out.join('\n');
}

/** `masters 31/30/29, replicas 4/4/4` (% of one core each). */
export function redisNodesLine(nodes: readonly RedisNodeCpu[]): string {
  const of = (role: RedisNodeCpu['role']) => nodes.filter((n) => n.role === role).map((n) => Math.round(n.cpuPercent)).join('/');
  return `masters ${of('master')}, replicas ${of('replica')}`;
}

export function formatSoak(s: SoakReport): string {
  return [
    `Soak: ${s.design}, ${s.seconds} s at ${s.targetRate} req/s target (${s.connections} connections): achieved ${Math.round(s.achievedThroughput)} req/s, ` +
      `p50 ${s.latencyMs.p50} p99 ${s.latencyMs.p99} max ${s.latencyMs.max} ms; outcomes 201 ${s.outcomes.created} 200 ${s.outcomes.ok} ` +
      `409 ${s.outcomes.insufficient} other ${s.outcomes.other}`,
    `RSS MiB: start ${s.rssMiB.start}, median ${s.rssMiB.median}, max ${s.rssMiB.max}, end ${s.rssMiB.end}; ` +
      `slope after warm-up ${s.rssMiB.slopeMiBPerMinute} MiB/min; invariants ${s.invariants.ok ? 'ok' : 'FAILED'}`,
    `Redis used_memory MiB: ${s.redisUsedMemoryMiB.start} → ${s.redisUsedMemoryMiB.end}`,
    `timeline (10 s buckets): ${s.timeline.map((p) => `${p.t}s ${Math.round(p.throughput)}/s p99 ${p.p99}`).join(' | ')}`,
  ].join('\n');
}

/**
 * Writes `<name>.json` and `<name>.svg` (latest: the published run; quick: a smoke run, not committed); a soak goes
 * into the existing latest.json (or a new one).
 */
export async function writeResults(
  outDir: string,
  report: BenchReport,
  name: 'latest' | 'quick' = 'latest',
): Promise<{ json: string; svg: string }> {
  mkdirSync(outDir, { recursive: true });
  const json = path.join(outDir, `${name}.json`);
  const previous = existsSync(json) ? (JSON.parse(readFileSync(json, 'utf8')) as Partial<BenchReport>) : null;
  const merged: BenchReport = previous?.soak && !report.soak ? { ...report, soak: previous.soak } : report;
  writeFileSync(json, `${JSON.stringify(merged, null, 2)}\n`);
  const svg = path.join(outDir, `${name}.svg`);
  // Where requests are shed, what counts is the acknowledged writes and their latency, not the fast refusals.
  const rows = report.summary.map((s) => ({
    scenario: `${s.scenario} (${s.connections})`,
    design: s.design,
    throughput: Math.round(s.outcomes.shed > 0 ? s.writesPerSecond : s.sale.throughput),
    p99: Math.max(s.outcomes.shed > 0 ? s.answeredP99Ms.ok : s.sale.p99, 0.1),
  }));
  writeFileSync(svg, await renderChart(rows, machineLines(report.machine)));
  return { json, svg };
}

export function writeSoak(outDir: string, soak: SoakReport): string {
  mkdirSync(outDir, { recursive: true });
  const json = path.join(outDir, 'latest.json');
  const previous = existsSync(json) ? (JSON.parse(readFileSync(json, 'utf8')) as Record<string, unknown>) : { kind: 'irs-bench', version: 1 };
  writeFileSync(json, `${JSON.stringify({ ...previous, soak }, null, 2)}\n`);
  return json;
}
