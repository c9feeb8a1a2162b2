/**
 * The invariants every run ends with (architecture.md): per (item, location)
 * - I1 no oversell: units sold + units held <= units supplied; on-hand >= 0; reserved <= on-hand;
 * - I5 conservation: on-hand = supplied - sold; reserved = units of pending holds (each store on its own);
 * - durable: PostgreSQL = Redis (on-hand and reserved) once in-flight work has drained;
 * - I4 as a client sees it: every confirm the client saw acknowledged is recorded as sold, and every 201 is a
 *   recorded reservation.
 * The bench changes stock only by seeding (PUT) and by reservations, so "supplied" is what it seeded.
 */
import type { Redis } from 'ioredis';
import type pg from 'pg';
import { Keys } from '../src/redis/keys.js';
import { isDurable, type Acked, type Design } from './types.js';

export interface Figures {
  onHand: number;
  reserved: number;
  sold: number;
  held: number;
}

export interface AuditResult {
  ok: boolean;
  checkedItems: number;
  failures: string[];
  totals: { supplied: number; sold: number; held: number };
  /** durable only: PostgreSQL and Redis agree on every item. */
  postgresEqualsRedis?: boolean;
}

const LOCATION = 'default';

/** PostgreSQL's figures per item (bench items live at the default location). */
async function postgresFigures(db: pg.Client): Promise<Map<string, Figures>> {
  const figures = new Map<string, Figures>();
  const stock = await db.query<{ item_id: string; on_hand: string; reserved: string }>(
    'SELECT item_id, on_hand, reserved FROM stock WHERE location = $1',
    [LOCATION],
  );
  for (const r of stock.rows) figures.set(r.item_id, { onHand: Number(r.on_hand), reserved: Number(r.reserved), sold: 0, held: 0 });
  const lines = await db.query<{ item_id: string; status: string; units: string }>(
    `SELECT l.item_id, r.status, sum(l.quantity) AS units
     FROM reservation_lines l JOIN reservations r ON r.id = l.reservation_id
     WHERE l.location = $1 AND r.status IN ('pending', 'confirmed') GROUP BY l.item_id, r.status`,
    [LOCATION],
  );
  for (const r of lines.rows) {
    const f = figures.get(r.item_id) ?? { onHand: 0, reserved: 0, sold: 0, held: 0 };
    if (r.status === 'confirmed') f.sold = Number(r.units);
    else f.held = Number(r.units);
    figures.set(r.item_id, f);
  }
  return figures;
}

/** Redis' figures per item: the stock hash, and the holds hash summed by state (pending p, confirmed c). */
async function redisFigures(redis: Redis, prefix: string, items: string[]): Promise<Map<string, Figures>> {
  const figures = new Map<string, Figures>();
  const keys = new Keys(prefix);
  for (let i = 0; i < items.length; i += 500) {
    const chunk = items.slice(i, i + 500);
    const p = redis.pipeline();
    for (const id of chunk) {
      const k = keys.item(id);
      p.hgetall(k.stock).hgetall(k.holds);
    }
    const replies = (await p.exec()) ?? [];
    chunk.forEach((id, n) => {
      const stock = (replies[2 * n]?.[1] ?? {}) as Record<string, string>;
      const holds = (replies[2 * n + 1]?.[1] ?? {}) as Record<string, string>;
      if (stock[`h:${LOCATION}`] === undefined) return;
      const f: Figures = { onHand: Number(stock[`h:${LOCATION}`]), reserved: Number(stock[`r:${LOCATION}`] ?? 0), sold: 0, held: 0 };
      for (const [field, value] of Object.entries(holds)) {
        if (!field.endsWith(`:${LOCATION}`)) continue;
        const [state, qty] = value.split(':');
        if (state === 'c') f.sold += Number(qty);
        else if (state === 'p') f.held += Number(qty);
      }
      figures.set(id, f);
    });
  }
  return figures;
}

function checkStore(label: string, supplied: Map<string, number>, figures: Map<string, Figures>, failures: string[]): void {
  for (const [item, units] of supplied) {
    const f = figures.get(item);
    if (!f) {
      failures.push(`${label} ${item}: missing`);
      continue;
    }
    if (f.sold + f.held > units) failures.push(`${label} ${item}: I1 oversold: sold ${f.sold} + held ${f.held} > supplied ${units}`);
    if (f.onHand < 0 || f.reserved < 0 || f.reserved > f.onHand) failures.push(`${label} ${item}: I1 on-hand ${f.onHand}, reserved ${f.reserved}`);
    if (f.onHand !== units - f.sold) failures.push(`${label} ${item}: I5 on-hand ${f.onHand} != supplied ${units} - sold ${f.sold}`);
    if (f.reserved !== f.held) failures.push(`${label} ${item}: I5 reserved ${f.reserved} != pending holds ${f.held}`);
  }
}

function checkAcked(label: string, acked: Record<string, Acked>, figures: Map<string, Figures>, failures: string[]): void {
  for (const [item, a] of Object.entries(acked)) {
    const sold = figures.get(item)?.sold ?? 0;
    if (a.confirmed > sold) failures.push(`${label} ${item}: I4 the client saw ${a.confirmed} units confirmed, ${sold} are recorded sold`);
  }
}

export interface AuditInput {
  design: Design;
  supplied: Map<string, number>;
  acked: Record<string, Acked>;
  ackedReservations: number;
  db: pg.Client | null;
  redis: Redis | null;
  redisPrefix: string;
}

/** One look at the stores of a design (the orchestrator retries while a durable node's in-flight work drains). */
export async function audit(input: AuditInput): Promise<AuditResult> {
  const failures: string[] = [];
  const items = [...input.supplied.keys()];
  let totals = { supplied: 0, sold: 0, held: 0 };
  const sum = (figures: Map<string, Figures>) => {
    totals = { supplied: 0, sold: 0, held: 0 };
    for (const [item, units] of input.supplied) {
      const f = figures.get(item);
      totals.supplied += units;
      totals.sold += f?.sold ?? 0;
      totals.held += f?.held ?? 0;
    }
  };

  let pgSide: Map<string, Figures> | null = null;
  let redisSide: Map<string, Figures> | null = null;
  if (input.db && (isDurable(input.design) || input.design === 'pg-only')) {
    pgSide = await postgresFigures(input.db);
    checkStore('postgres', input.supplied, pgSide, failures);
    checkAcked('postgres', input.acked, pgSide, failures);
    const { rows } = await input.db.query<{ n: string }>('SELECT count(*) AS n FROM reservations');
    const recorded = Number(rows[0]?.n ?? 0);
    if (input.ackedReservations > recorded) failures.push(`postgres: I4 the client saw ${input.ackedReservations} reservations created, ${recorded} are recorded`);
    sum(pgSide);
  }
  if (input.redis && (isDurable(input.design) || input.design === 'redis-only')) {
    redisSide = await redisFigures(input.redis, input.redisPrefix, items);
    // Redis counts sold units only from confirmed holds' tombstones, which it drops after
    // TOMBSTONE_RETENTION_SECONDS: with PostgreSQL beside it, Redis is held to equal PostgreSQL instead (below).
    if (!pgSide) {
      checkStore('redis', input.supplied, redisSide, failures);
      checkAcked('redis', input.acked, redisSide, failures);
      sum(redisSide);
    }
  }
  let postgresEqualsRedis: boolean | undefined;
  if (pgSide && redisSide) {
    postgresEqualsRedis = true;
    for (const item of items) {
      const p = pgSide.get(item);
      const r = redisSide.get(item);
      if (!p || !r || p.onHand !== r.onHand || p.reserved !== r.reserved) {
        postgresEqualsRedis = false;
        failures.push(`${item}: PostgreSQL on-hand/reserved ${p?.onHand}/${p?.reserved} != Redis ${r?.onHand}/${r?.reserved}`);
      }
    }
  }
  return {
    ok: failures.length === 0,
    checkedItems: items.length,
    failures: failures.slice(0, 20),
    totals,
    ...(postgresEqualsRedis === undefined ? {} : { postgresEqualsRedis }),
  };
}

interface AvailabilityBody {
  onHand: number;
  reserved: number;
  available: number;
}

/** For a service at --url (stores unknown): the same I1 and I4 checks through GET availability. */
export async function auditOverHttp(url: string, supplied: Map<string, number>, acked: Record<string, Acked>, headers: Record<string, string>): Promise<AuditResult> {
  const failures: string[] = [];
  const totals = { supplied: 0, sold: 0, held: 0 };
  const items = [...supplied.entries()];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const [item, units] = items[next++]!;
      const response = await fetch(`${url}/items/${encodeURIComponent(item)}/availability`, { headers });
      if (response.status !== 200) {
        failures.push(`${item}: availability answered ${response.status}`);
        continue;
      }
      const a = (await response.json()) as AvailabilityBody;
      const sold = units - a.onHand;
      totals.supplied += units;
      totals.sold += sold;
      totals.held += a.reserved;
      if (a.onHand < 0 || a.reserved < 0 || a.available < 0) failures.push(`${item}: I1 on-hand ${a.onHand}, reserved ${a.reserved}, available ${a.available}`);
      if (sold + a.reserved > units) failures.push(`${item}: I1 oversold: sold ${sold} + held ${a.reserved} > supplied ${units}`);
      const seen = acked[item]?.confirmed ?? 0;
      if (seen > sold) failures.push(`${item}: I4 the client saw ${seen} units confirmed, on-hand shows ${sold} sold`);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  return { ok: failures.length === 0, checkedItems: items.length, failures: failures.slice(0, 20), totals };
}
