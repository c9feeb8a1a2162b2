/**
 * The load generator: a process of its own (so it never shares an event loop with the orchestrator or the
 * service), driving autocannon with the scenario's request sequence. Every reservation carries a fresh
 * Idempotency-Key. Latency is recorded per response and per operation from autocannon's own response timing
 * (autocannon's histogram alone counts only 2xx, and has no p95).
 *
 * Input: a LoadSpec as JSON in argv[2]. Output over IPC (LoadMessage): `sold-out` when the flash SKU sold out, then
 * one LoadResult, then exit.
 */
import autocannon from 'autocannon';
import { Samples, percentiles, round } from './stats.js';
import type { Acked, LoadMessage, LoadResult, LoadSpec, OpName, OpStats, TimelinePoint } from './types.js';
import { mulberry32 } from '../test/helpers/random.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
const send = (message: LoadMessage) => process.send?.(message);

interface LineSpec {
  itemId: string;
  quantity: number;
}

/** Per connection: the reservation just made, for the confirm/release that follows it. */
interface Context {
  lines?: LineSpec[];
  id?: string;
  action?: 'confirm' | 'release';
}

// Seeded: the same carts for every design of a run.
const random = mulberry32(spec.seed).next;

let keyCounter = 0;
let settleCounter = 0;
let readCounter = 0;

const reservationBody = (lines: LineSpec[]) =>
  JSON.stringify({ lines, ttlSeconds: spec.ttlSeconds, ...(spec.allocation ? { allocation: spec.allocation } : {}) });

function cartLines(): LineSpec[] {
  const count = 2 + Math.floor(random() * 4);
  const picked = new Set<number>();
  while (picked.size < count) picked.add(Math.floor(random() * spec.skuCount));
  return [...picked].map((i) => ({ itemId: `${spec.skuPrefix}${i}`, quantity: 1 + Math.floor(random() * 2) }));
}

function reserveRequest(req: autocannon.Request, lines: LineSpec[]): autocannon.Request {
  return {
    ...req,
    method: 'POST',
    path: '/reservations',
    headers: { ...spec.headers, 'content-type': 'application/json', 'idempotency-key': `${spec.keyPrefix}${keyCounter++}` },
    body: reservationBody(lines),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// What the client saw
// ---------------------------------------------------------------------------------------------------------------

const all = new Samples();
const opSamples: Partial<Record<OpName, Samples>> = {};
const opStatuses: Partial<Record<OpName, Record<string, number>>> = {};
const at = spec.timelineSeconds ? new Samples() : null;
const outcomes = { created: 0, ok: 0, insufficient: 0, shed: 0, other: 0 };
const otherSamples: string[] = [];
const acked: Record<string, Acked> = {};
let ackedReservations = 0;
let writes = 0;
let soldOutAt: number | null = null;
/** Responses recorded before the sell-out (their latencies are all.values()[0..n)), and the writes among them. */
let responsesAtSoldOut = 0;
let writesAtSoldOut = 0;
let started = 0;
/** The operation of the response being recorded: onResponse sets it, autocannon's 'response' event reads it next. */
let lastOp: OpName = 'read';
/** Likewise, what kind of answer it was. */
let lastKind: 'ok' | 'shed' | 'other' = 'other';
const answered = { ok: new Samples(), shed: new Samples() };

type Headers = Record<string, string | string[]>;
/** A 503 that says when to retry: the service shed the request before deciding anything. */
const isShed = (status: number, headers: Headers) => status === 503 && Object.keys(headers).some((h) => h.toLowerCase() === 'retry-after');

const ackedOf = (itemId: string): Acked => (acked[itemId] ??= { reserved: 0, confirmed: 0, released: 0 });

function classify(op: OpName, status: number, body: string, headers: Headers): void {
  lastOp = op;
  lastKind = status === 200 || status === 201 ? 'ok' : 'other';
  const statuses = (opStatuses[op] ??= {});
  statuses[status] = (statuses[status] ?? 0) + 1;
  if (status === 201) outcomes.created++;
  else if (status === 200) outcomes.ok++;
  else if (isShed(status, headers)) {
    outcomes.shed++;
    lastKind = 'shed';
  } else if (status === 409 && body.includes('"insufficient_stock"')) {
    outcomes.insufficient++;
    if (soldOutAt === null && op === 'reserve') {
      soldOutAt = (performance.now() - started) / 1000;
      responsesAtSoldOut = all.length; // this response is recorded just after: it belongs to the sell-out
      writesAtSoldOut = writes;
      send({ type: 'sold-out' });
    }
  } else {
    outcomes.other++;
    if (otherSamples.length < 10) otherSamples.push(`${op} ${status} ${body.slice(0, 300)}`);
  }
}

/** The reservation id from a reservation document (the id is its first member). */
function idOf(body: string): string | undefined {
  const start = body.indexOf('"id":"');
  if (start < 0) return undefined;
  const end = body.indexOf('"', start + 6);
  return body.slice(start + 6, end);
}

function onReserved(status: number, body: string, ctx: Context, headers: Headers): void {
  classify('reserve', status, body, headers);
  if (status !== 201 || !ctx.lines) {
    ctx.id = undefined;
    return;
  }
  ctx.id = idOf(body);
  ackedReservations++;
  writes++;
  for (const l of ctx.lines) ackedOf(l.itemId).reserved += l.quantity;
}

function onSettled(status: number, body: string, ctx: Context, headers: Headers): void {
  classify(ctx.action ?? 'confirm', status, body, headers);
  if (status !== 200 || !ctx.lines) return;
  writes++;
  for (const l of ctx.lines) {
    const a = ackedOf(l.itemId);
    if (ctx.action === 'confirm') a.confirmed += l.quantity;
    else a.released += l.quantity;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The request sequences (autocannon loops over them per connection)
// ---------------------------------------------------------------------------------------------------------------

/** Reserve, then (if it was granted) confirm every other reservation and release the rest. */
function reserveThenSettle(pick: () => LineSpec[]): autocannon.Request[] {
  const settle = (req: autocannon.Request, context: object): autocannon.Request | null => {
    const ctx = context as Context;
    if (!ctx.id) return null; // not granted: autocannon starts the sequence again with a new reservation
    ctx.action = settleCounter++ % 2 === 0 ? 'confirm' : 'release';
    return { ...req, method: 'POST', path: `/reservations/${ctx.id}/${ctx.action}`, headers: { ...spec.headers }, body: undefined };
  };
  return [
    {
      setupRequest: (req, context) => {
        const ctx = context as Context;
        ctx.lines = pick();
        return reserveRequest(req, ctx.lines);
      },
      onResponse: (status, body, context, headers) => onReserved(status, body, context as Context, headers as Headers),
    },
    {
      // autocannon's types say setupRequest returns a Request; returning null (documented) restarts the sequence.
      setupRequest: settle as (req: autocannon.Request, context: object) => autocannon.Request,
      onResponse: (status, body, context, headers) => onSettled(status, body, context as Context, headers as Headers),
    },
  ];
}

/** Reservations only, each kept until its TTL: every answer a durable 201 while stock lasts. */
function reserveOnly(pick: () => LineSpec[]): autocannon.Request[] {
  return [reserveThenSettle(pick)[0]!];
}

/** Nine availability reads, then one one-line reservation (held until its TTL), over the cart SKUs. */
function readMix(): autocannon.Request[] {
  return [
    {
      setupRequest: (req, context) => {
        const ctx = context as Context;
        const itemId = `${spec.skuPrefix}${Math.floor(random() * spec.skuCount)}`;
        if (readCounter++ % 10 === 9) {
          ctx.lines = [{ itemId, quantity: 1 }];
          ctx.action = undefined;
          return reserveRequest(req, ctx.lines);
        }
        ctx.lines = undefined;
        return { ...req, method: 'GET', path: `/items/${itemId}/availability`, headers: { ...spec.headers }, body: undefined };
      },
      onResponse: (status, body, context, headers) => {
        const ctx = context as Context;
        if (ctx.lines) onReserved(status, body, ctx, headers as Headers);
        else classify('read', status, body, headers as Headers);
      },
    },
  ];
}

const requests =
  spec.kind === 'flash'
    ? (spec.reserveOnly ? reserveOnly : reserveThenSettle)(() => [{ itemId: spec.flashItem, quantity: 1 }])
    : spec.kind === 'carts'
      ? reserveThenSettle(cartLines)
      : readMix();

// ---------------------------------------------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------------------------------------------

let connectionErrors = 0;
const cpuBefore = process.cpuUsage();
started = performance.now();

const instance = autocannon(
  {
    url: spec.url,
    connections: spec.connections,
    duration: spec.durationSeconds,
    timeout: 10,
    requests,
    ...(spec.overallRate ? { overallRate: spec.overallRate } : {}),
  },
  (err: unknown, result: autocannon.Result) => {
    if (err) {
      console.error('autocannon failed:', err);
      process.exit(1);
    }
    finish(result);
  },
);

instance.on('response', (_client, _status, _bytes, responseTime) => {
  all.push(responseTime);
  (opSamples[lastOp] ??= new Samples()).push(responseTime);
  if (lastKind !== 'other') answered[lastKind].push(responseTime);
  at?.push(performance.now() - started);
});
instance.on('reqError', () => connectionErrors++);

function timeline(latencies: Float64Array, times: Float64Array, bucketSeconds: number): TimelinePoint[] {
  const buckets = new Map<number, Samples>();
  for (let i = 0; i < times.length; i++) {
    const b = Math.floor(times[i]! / 1000 / bucketSeconds);
    let s = buckets.get(b);
    if (!s) buckets.set(b, (s = new Samples()));
    s.push(latencies[i]!);
  }
  return [...buckets.entries()]
    .sort(([a], [b]) => a - b)
    .map(([b, s]) => ({ t: b * bucketSeconds, throughput: round(s.length / bucketSeconds, 1), p99: percentiles(s.values()).p99 }));
}

function finish(result: autocannon.Result): void {
  const elapsedSeconds = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const points = at && spec.timelineSeconds ? timeline(all.values().slice(), at.values(), spec.timelineSeconds) : undefined;
  const saleSeconds = soldOutAt ?? elapsedSeconds;
  const saleResponses = soldOutAt === null ? all.length : responsesAtSoldOut;
  const saleWrites = soldOutAt === null ? writes : writesAtSoldOut;
  const saleLatency = percentiles(all.values().slice(0, saleResponses));
  const ops: Partial<Record<OpName, OpStats>> = {};
  for (const [op, samples] of Object.entries(opSamples) as [OpName, Samples][]) {
    ops[op] = { latencyMs: percentiles(samples.values()), statuses: opStatuses[op] ?? {} };
  }
  const other = outcomes.other + connectionErrors;
  const out: LoadResult = {
    elapsedSeconds: round(elapsedSeconds, 3),
    responses: all.length,
    throughput: round(all.length / elapsedSeconds, 1),
    writesPerSecond: round(writes / elapsedSeconds, 1),
    latencyMs: percentiles(all.values()),
    createdPerSecond: round(outcomes.created / elapsedSeconds, 1),
    answeredMs: { ok: percentiles(answered.ok.values()), shed: percentiles(answered.shed.values()) },
    ops,
    outcomes: { ...outcomes, other },
    otherSamples,
    connectionErrors,
    timeouts: result.timeouts,
    ackedReservations,
    acked,
    soldOutAtSeconds: soldOutAt === null ? null : round(soldOutAt, 2),
    sale: {
      seconds: round(saleSeconds, 2),
      responses: saleResponses,
      throughput: round(saleResponses / saleSeconds, 1),
      latencyMs: saleLatency,
      writes: saleWrites,
    },
    generatorCpuPercent: round(((cpu.user + cpu.system) / 1000 / (elapsedSeconds * 1000)) * 100, 1),
    autocannon: {
      requests: result.requests.total,
      p50: result.latency.p50,
      p99: result.latency.p99,
      max: result.latency.max,
      errors: result.errors,
      timeouts: result.timeouts,
      non2xx: result.non2xx,
    },
    ...(points ? { timeline: points } : {}),
  };
  if (process.send) process.send({ type: 'result', result: out } satisfies LoadMessage, () => process.exit(0));
  else {
    console.log(JSON.stringify(out, null, 2));
    process.exit(0);
  }
}
