import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkInvariants } from '../helpers/invariants.js';
import { startHttpApp } from '../helpers/api.js';
import type { TestApp } from '../helpers/app.js';
import { mulberry32 } from '../helpers/random.js';
import { describeCase, type Case, type World } from './case.js';
import { batchArbitrary } from './cases.js';
import { Findings, judge } from './contract.js';
import { ROUTES } from './routes.js';
import { diff, snapshot, type State } from './state.js';
import { Wire, type Answer, type WireRequest } from './wire.js';
import { API_KEYS, CREDENTIALS, callJson, seedWorld } from './world.js';

/**
 * Hostile requests at every route over real sockets (issue 9, "What must be shown"). Every request to a mutating
 * route carries at least one defect that guarantees its refusal, so any 2xx there is a failure, and the whole state
 * (Redis under the app's prefix, PostgreSQL's tables) must be what it was before the run. Every refusal must be a
 * problem+json with a catalogue code and status; no 5xx; the process keeps answering.
 *
 * Replay: the seed is printed at the start and with every failure. `FUZZ_SEED=<n> npx vitest run test/fuzz`
 * reruns the same requests; `FUZZ_PATH=<p>` (printed per failure class) reruns just that batch and lists its
 * violations. `FUZZ_REQUESTS` (default 10,000) and `FUZZ_CONNECTIONS` (default 8:
 * the batch size, and the keep-alive sockets) size the run; replay with the same `FUZZ_CONNECTIONS`.
 */

function intFromEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${raw}`);
  return n;
}

const REQUESTS = intFromEnv('FUZZ_REQUESTS', 10_000);
const CONNECTIONS = Math.max(1, intFromEnv('FUZZ_CONNECTIONS', 8));
const SEED = intFromEnv('FUZZ_SEED', Math.floor(Math.random() * 2 ** 31));
const PATH = process.env.FUZZ_PATH || undefined;
const RUNS = Math.ceil(REQUESTS / CONNECTIONS);

const replayCommand = (path?: string) =>
  `FUZZ_SEED=${SEED}${path === undefined ? '' : ` FUZZ_PATH=${path}`} FUZZ_CONNECTIONS=${CONNECTIONS} FUZZ_REQUESTS=${REQUESTS} npx vitest run test/fuzz`;

/** Input classes the generators must have produced in a full run (a generator that never fires tests nothing). */
const REQUIRED_CLASSES = [
  'type.', 'type.deep', 'number.range', 'number.fraction', 'number.not-json', 'string.empty', 'string.over-limit',
  'text.nul', 'text.lone-surrogate', 'text.unicode', 'text.control', 'text.invalid-utf8', 'id.alphabet', 'id.dots',
  'object.unknown-field', 'object.missing', 'body.not-an-object', 'body.empty', 'json.truncated', 'json.over-limit',
  'json.bom', 'json.number-spelling', 'json.duplicate-key-valid-last', '+duplicate-key', 'proto.__proto__',
  'lines.empty', 'lines.over-limit', 'lines.duplicate-pair', 'lines.allocated-twice', 'allocation.', 'metadata.too-many-keys', 'metadata.value-',
  'media.other-type', 'media.missing', 'media.variant', 'method.other', 'method.made-up', 'method.lowercase',
  'path.id-alphabet', 'path.id-over-limit', 'path.percent-garbage', 'path.id-dots', 'path.id-nul', 'path.unrouted',
  'path.trailing-slash', 'path.double-slash', 'query.garbage', 'idem.missing', 'idem.over-limit', 'idem.utf8',
  'idem.control', 'auth.missing', 'auth.wrong-key', 'auth.client-on-operator-route', 'auth.control', 'auth.huge',
  'header.big', 'frame.truncated-head', 'frame.truncated-body', 'frame.content-length-twice',
  'frame.content-length-and-chunked', 'frame.chunk-invalid', 'frame.control-byte-in-header', 'frame.header-too-large',
  'frame.expect-unknown', 'frame.http-1.0', 'frame.version', 'sem.unknown-item', 'sem.unknown-location',
  'sem.insufficient', 'sem.below-zero', 'sem.unknown-id', 'sem.key-reused', 'size.at-limit',
];

describe('hostile requests over real sockets', () => {
  const t = {} as TestApp;
  let port = 0;
  let wire: Wire;
  let world: World;
  let redis: Redis;
  let db: pg.Client;

  beforeAll(async () => {
    // No reconciliation timer: its lock key would come and go in the middle of the state comparisons.
    Object.assign(t, await startHttpApp({ API_KEYS, RECONCILE_INTERVAL_MS: 0 }));
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as AddressInfo).port;
    wire = new Wire(port, CONNECTIONS);
    world = await seedWorld(wire);
    redis = new Redis(t.config.REDIS_URL, { lazyConnect: true });
    await redis.connect();
    db = new pg.Client({ connectionString: t.databaseUrl });
    await db.connect();
  });

  afterAll(async () => {
    wire?.close();
    redis?.disconnect();
    await db?.end();
    await t.close?.();
  });

  const state = (): Promise<State> => snapshot(redis, t.config.REDIS_KEY_PREFIX, db);

  async function expectLive(when: string): Promise<void> {
    const answer = await wire.send({ method: 'GET', target: '/health/live', headers: [] });
    const ok = answer.kind === 'response' && answer.status === 200 && answer.body.toString().includes('"ok"');
    if (!ok) throw new Error(`the service stopped answering ${when}: ${JSON.stringify(answer).slice(0, 300)}\nreplay: ${replayCommand()}`);
  }

  it('the route table covers every route the service serves', async () => {
    const res = await callJson(wire, 'GET', '/openapi.json', CREDENTIALS.client);
    const paths = (res.json as { paths: Record<string, Record<string, unknown>> }).paths;
    const served = Object.entries(paths).flatMap(([path, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{(\w+)\}/g, ':$1')}`),
    );
    const fuzzed = new Set(ROUTES.map((r) => `${r.method} ${r.template}`));
    expect(served.filter((s) => !fuzzed.has(s)), 'routes in the OpenAPI document without a generator').toEqual([]);
    for (const r of ROUTES.filter((x) => x.template !== '(none)')) {
      expect(t.app.hasRoute({ method: r.method as 'GET', url: r.template }), r.name).toBe(true);
    }
  });

  it(
    `${REQUESTS} hostile requests: refusals are catalogue problems, no 5xx, every mutation refused, state unchanged`,
    async () => {
      console.log(`hostile fuzz: ${REQUESTS} requests in batches of ${CONNECTIONS}, seed ${SEED}${PATH ? `, path ${PATH}` : ''}\n  replay: ${replayCommand(PATH)}`);
      const before = await state();
      const findings = new Findings();
      const stateChanges: string[] = [];
      const perRoute = new Map<string, number>();
      const labels = new Set<string>();
      let baseline = before;
      let run = 0;
      let sent = 0;
      const checkpointEvery = Math.max(1, Math.floor(RUNS / 8));

      const property = async (batch: Case[]) => {
        const path = PATH ?? String(run);
        run++;
        const answers: Answer[] = await Promise.all(batch.map((c) => wire.send(c.wire)));
        const violations: string[] = [];
        batch.forEach((c, i) => {
          sent++;
          perRoute.set(c.route, (perRoute.get(c.route) ?? 0) + 1);
          for (const l of [...c.defects, ...c.decorations]) labels.add(l);
          for (const v of judge(c, answers[i]!)) {
            findings.add(c, v, path);
            violations.push(`${v.kind}: ${v.detail}\n${describeCase(c)}`);
          }
        });
        if (run % 25 === 0) await expectLive(`after batch ${path}`);
        if (PATH !== undefined || run % checkpointEvery === 0 || run === RUNS) {
          const now = await state();
          const changes = diff(baseline, now);
          if (changes.length > 0) {
            stateChanges.push(`between batches ${PATH ?? run - checkpointEvery} and ${path}:\n    ${changes.join('\n    ')}`);
            violations.push(`state changed:\n    ${changes.join('\n    ')}`);
            baseline = now;
          }
        }
        // Replaying one batch: fail on it, with every violation in it (not shrunk: shrinking a batch wanders off
        // to whichever violation is smallest, rarely the one asked about).
        if (PATH !== undefined && violations.length > 0) throw new Error(`batch ${PATH}:\n\n${violations.join('\n\n')}`);
      };
      await fc.assert(fc.asyncProperty(batchArbitrary(world, CONNECTIONS), property), {
        seed: SEED,
        numRuns: RUNS,
        ...(PATH !== undefined ? { path: PATH, endOnFailure: true } : {}),
      });

      await expectLive('at the end');
      const changes = diff(before, await state());
      console.log(`hostile fuzz: ${sent} requests sent (${wire.resent} resent after a kept-alive socket closed under them); per route: ${[...perRoute].map(([r, n]) => `${r} ${n}`).join(', ')}`);

      const problems: string[] = [];
      if (findings.size > 0) problems.push(findings.report(replayCommand));
      if (changes.length > 0) {
        problems.push(`state after the run differs from before it (seed ${SEED}):\n  ${changes.join('\n  ')}\ncheckpoints:\n  ${stateChanges.join('\n  ')}`);
      }
      if (PATH === undefined && REQUESTS >= 10_000) {
        const missing = REQUIRED_CLASSES.filter((c) => ![...labels].some((l) => l.includes(c)));
        if (missing.length > 0) problems.push(`input classes never generated: ${missing.join(', ')}`);
        const floor = Math.floor(REQUESTS / 200);
        const starved = ROUTES.filter((r) => (perRoute.get(r.name) ?? 0) < floor).map((r) => `${r.name} (${perRoute.get(r.name) ?? 0})`);
        if (starved.length > 0) problems.push(`routes that got fewer than ${floor} requests: ${starved.join(', ')}`);
      }
      if (problems.length > 0) console.log(`hostile fuzz failed; seed ${SEED}; replay: ${replayCommand()}\n\n${problems.join('\n\n')}`);
      expect(problems, `seed ${SEED}; replay: ${replayCommand()}`).toEqual([]);
    },
    180_000,
  );

  it(
    'valid requests interleaved with poisoned ones, fired at once: each gets its own answer; Redis and PostgreSQL agree',
    async () => {
      const rng = mulberry32(SEED);
      const pairs = [
        { itemId: 'fz-conc-a', location: 'default' },
        { itemId: 'fz-conc-a', location: 'wh-1' },
        { itemId: 'fz-conc-b', location: 'default' },
      ];
      const ON_HAND = 1000;
      for (const p of pairs) {
        const res = await callJson(wire, 'PUT', `/items/${p.itemId}/stock`, CREDENTIALS.operator, { quantity: ON_HAND, location: p.location });
        expect(res.status, res.text).toBe(200);
      }
      const concurrent = new Wire(port, 64);
      const mismatches = new Map<string, number>();
      const miss = (what: string) => mismatches.set(what, (mismatches.get(what) ?? 0) + 1);
      const created: { id: string; key: string; pair: string }[] = [];

      const reservePoisons: { label: string; field: string; poison(body: Record<string, unknown>): void }[] = [
        { label: 'NUL in reference', field: 'reference', poison: (b) => (b.reference = 'ord\u0000er-1') },
        { label: 'NUL in a metadata value', field: 'metadata.note', poison: (b) => ((b.metadata as Record<string, string>).note = 'a\u0000b') },
        { label: 'lone high surrogate in reference', field: 'reference', poison: (b) => (b.reference = 'order-\ud800') },
        { label: 'lone low surrogate in a metadata value', field: 'metadata.note', poison: (b) => ((b.metadata as Record<string, string>).note = '\udc00x') },
        { label: 'NUL in a metadata key', field: 'metadata', poison: (b) => ((b.metadata as Record<string, string>)['k\u0000'] = 'v') },
        { label: 'lone surrogate in a metadata key', field: 'metadata', poison: (b) => ((b.metadata as Record<string, string>)['k\udbff'] = 'v') },
      ];
      const fine = ['cart-\u202e42', 'order 😀 𝔘', 'zero\u200bwidth', 'ünïcødé', 'plain-ref'];

      for (let round = 0; round < 5; round++) {
        interface Shot {
          label: string;
          field?: string;
          key?: string;
          pair?: string;
          req: WireRequest;
        }
        const shots: Shot[] = [];
        const reserveShot = (label: string, body: Record<string, unknown>, key: string, field?: string, pair?: string): Shot => ({
          label,
          ...(field ? { field } : {}),
          key,
          ...(pair ? { pair } : {}),
          req: {
            method: 'POST',
            target: '/reservations',
            headers: [['Authorization', `Bearer ${CREDENTIALS.client}`], ['Content-Type', 'application/json'], ['Idempotency-Key', key]],
            body: Buffer.from(JSON.stringify(body)),
          },
        });
        for (let i = 0; i < 60; i++) {
          const p = rng.pick(pairs);
          const body = { lines: [{ itemId: p.itemId, location: p.location, quantity: 1 }], ttlSeconds: 3600, reference: rng.pick(fine), metadata: { channel: 'web', note: rng.pick(fine) } };
          shots.push(reserveShot('valid reservation', body, `fz-c-${SEED}-${round}-v${i}`, undefined, `${p.itemId}@${p.location}`));
          const poison = rng.pick(reservePoisons);
          const bad = { lines: [{ itemId: p.itemId, location: p.location, quantity: 1 }], ttlSeconds: 3600, reference: 'ok', metadata: { channel: 'web', note: 'ok' } };
          poison.poison(bad);
          shots.push(reserveShot(poison.label, bad, `fz-c-${SEED}-${round}-p${i}`, poison.field));
        }
        for (let i = 0; i < 20; i++) {
          const p = rng.pick(pairs);
          const reason = rng.pick(['dam\u0000aged', '\u0000', 'box \ud800', '\udfff']);
          shots.push({
            label: `${reason.includes('\u0000') ? 'NUL' : 'lone surrogate'} in an adjustment's reason`,
            field: 'reason',
            req: {
              method: 'POST',
              target: `/items/${p.itemId}/stock/adjustments`,
              headers: [['Authorization', `Bearer ${CREDENTIALS.operator}`], ['Content-Type', 'application/json']],
              body: Buffer.from(JSON.stringify({ delta: rng.pick([-1, 1]), location: p.location, reason })),
            },
          });
        }
        const order = rng.shuffle(shots);
        const answers = await Promise.all(order.map((s) => concurrent.send(s.req)));
        order.forEach((s, i) => {
          const a = answers[i]!;
          if (a.kind !== 'response') return miss(`${s.label}: no answer (${a.kind})`);
          let body: { id?: string; code?: string; errors?: { field: string }[] } = {};
          try {
            body = JSON.parse(a.body.toString('utf8')) as typeof body;
          } catch {
            // judged below by status and code
          }
          if (s.field === undefined) {
            if (a.status === 201 && typeof body.id === 'string') created.push({ id: body.id, key: s.key!, pair: s.pair! });
            else miss(`${s.label}: ${a.status} ${body.code ?? ''} (expected 201)`);
            return;
          }
          const named = (body.errors ?? []).some((e) => e.field === s.field || e.field.startsWith(`${s.field}.`) || e.field.startsWith(`${s.field}[`));
          const problem = /^application\/problem\+json/.test(a.headers['content-type'] ?? '');
          if (a.status !== 400 || body.code !== 'validation_failed' || !problem || !named) {
            miss(`${s.label}: ${a.status} ${body.code ?? ''}${a.status === 400 && !named ? ` naming ${(body.errors ?? []).map((e) => e.field).join(',')}` : ''} (expected 400 validation_failed naming ${s.field})`);
          }
        });
      }
      concurrent.close();

      const problems = [...mismatches].sort((a, b) => b[1] - a[1]).map(([what, n]) => `${what} ×${n}`);
      // Every 201 is recorded in PostgreSQL, with its key; nothing else is.
      const ids = created.map((c) => c.id);
      const { rows } = await db.query<{ id: string; status: string }>('SELECT id::text, status FROM reservations WHERE id = ANY($1::uuid[])', [ids]);
      if (rows.length !== ids.length) problems.push(`${ids.length - rows.length} reservations answered 201 are not in PostgreSQL`);
      if (rows.some((r) => r.status !== 'pending')) problems.push('a created reservation is not pending in PostgreSQL');
      const keys = await db.query<{ valid: string; poisoned: string }>(
        "SELECT count(*) FILTER (WHERE key LIKE $1 || '-%-v%') AS valid, count(*) FILTER (WHERE key LIKE $1 || '-%-p%') AS poisoned FROM idempotency_keys",
        [`fz-c-${SEED}`],
      );
      const recorded = keys.rows[0]!;
      if (Number(recorded.valid) !== ids.length) problems.push(`${recorded.valid} idempotency keys recorded for ${ids.length} valid reservations created`);
      if (Number(recorded.poisoned) !== 0) problems.push(`${recorded.poisoned} idempotency keys of poisoned requests recorded`);

      // Redis and PostgreSQL agree, and hold exactly the created reservations' units; on-hand untouched.
      try {
        await checkInvariants(t.app, ['fz-conc-a', 'fz-conc-b'], { holdsWithinSupply: true });
      } catch (err) {
        problems.push((err as Error).message);
      }
      for (const p of pairs) {
        const res = await callJson(wire, 'GET', `/items/${p.itemId}/availability`, CREDENTIALS.client);
        const loc = (res.json as { locations: { location: string; onHand: number; reserved: number }[] }).locations.find((l) => l.location === p.location);
        const expected = created.filter((c) => c.pair === `${p.itemId}@${p.location}`).length;
        if (loc?.onHand !== ON_HAND || loc.reserved !== expected) {
          problems.push(`${p.itemId}@${p.location}: onHand ${loc?.onHand} reserved ${loc?.reserved}, expected ${ON_HAND} and ${expected}`);
        }
      }
      expect(problems, `seed ${SEED}: ${created.length} of 300 valid reservations created; answers that were not each request's own (of ${5 * 140})`).toEqual([]);
    },
    120_000,
  );
});
