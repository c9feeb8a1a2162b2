import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { DRILLS, failures, runDrill, type DrillResult } from './harness.js';
import { formatTable } from './report.js';

/**
 * The fault drills of issue 4, with real processes: each runs a concurrent reservation load against real API
 * processes, injects its fault mid-load (mid-commit), lets the system recover and checks every invariant (I1–I6),
 * the answers against api.md, and Redis = PostgreSQL after reconciliation. Sized to keep this file around 2–3
 * minutes on two cores; `npm run drill` runs the same drills bigger and fails on everything, known bugs included.
 * Asserts invariants, never timings.
 */
const SEED = Number(process.env.DRILL_SEED ?? Math.floor(Math.random() * 2 ** 31));
const OPTIONS = { clients: 200, seconds: 7, seed: SEED };
const DRILL_TIMEOUT_MS = 90_000;
/** DRILL_STRICT=1: known bugs fail their drills too (to check a fix). */
const STRICT = process.env.DRILL_STRICT === '1';

/**
 * Bugs in src/ these drills found that are still open. Each failure line a drill reports is matched against them:
 * a match is printed (loudly) but tolerated, anything else fails the drill. The signatures are narrow on purpose;
 * the checks attribute a violation to a known bug only when the evidence says so (see checks.ts). They reproduce
 * often but not on every run (they need the fault to catch a particular operation in flight), which is why they
 * are matched here rather than marked `it.fails`. Delete an entry when its fix lands.
 */
const KNOWN_BUGS: { bug: string; signature: RegExp }[] = [
  // BUG: phantom stock. A stock increase is applied in Redis before PostgreSQL records it; when the record never
  // comes (the process dies mid-commit) or fails after the new units were reserved, Redis offers units that were
  // never supplied, and they get sold: PostgreSQL on-hand goes negative (I1). src/service/stock.ts change().
  { bug: 'phantom stock', signature: /\[phantom stock: / },
  // BUG: a release retried after its first attempt's record was lost answers 409 reservation_expired once the
  // sweeper records the expiry; api.md says 200 with status expired. src/service/reservations.ts awaitRecorded().
  { bug: 'release answered 409 expired', signature: /^API answers per api\.md: release \S+ \(.*\): answered 409 release reservation_expired/ },
  // BUG: stranded transaction. A connection lost mid-transaction without PostgreSQL noticing (blackholed FIN, dead
  // host) keeps its row locks and the fence's shared lock: expiries on those rows are never recorded (I3), writes
  // there answer 503, a rebuild would wait forever. No idle_in_transaction_session_timeout / statement_timeout /
  // keepalive is set on the pool (src/store/database.ts createPool).
  { bug: 'stranded transaction', signature: /\[stranded transaction: / },
];

const results: DrillResult[] = [];
afterAll(() => {
  if (results.length > 0) console.log(`fault drills (DRILL_SEED=${SEED} replays the load's choices)\n${formatTable(results)}`);
});

describe('fault drills', () => {
  for (const drill of DRILLS) {
    it(
      `${drill.name}: ${drill.title}`,
      async () => {
        const result = await runDrill(drill, OPTIONS);
        results.push(result);
        const all = failures(result);
        const known = STRICT ? [] : all.filter((f) => KNOWN_BUGS.some((b) => b.signature.test(f)));
        const unexpected = all.filter((f) => !known.includes(f));
        if (known.length > 0) {
          const bugs = KNOWN_BUGS.filter((b) => known.some((f) => b.signature.test(f))).map((b) => b.bug);
          console.warn(`${drill.name}: KNOWN BUG(S) REPRODUCED (${bugs.join(', ')}):\n  ${known.slice(0, 5).join('\n  ')}`);
        }
        const where = `seed ${SEED}${result.logDir ? `, API logs in ${result.logDir}` : ''}`;
        expect(unexpected.slice(0, 30), where).toEqual([]);
        // The drill must have exercised something: acknowledged work, and service again after the fault.
        expect(result.acks).toBeGreaterThan(0);
        expect(result.recoveryMs, 'no reservation succeeded after the fault').not.toBeNull();
        // Passed (known bugs aside): the API logs are only kept for a drill that fails.
        if (result.logDir) rmSync(result.logDir, { recursive: true, force: true });
      },
      DRILL_TIMEOUT_MS,
    );
  }
});
