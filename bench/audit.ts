/**
 * The invariants every run ends with (architecture.md), judged by the checker every suite shares
 * (test/helpers/invariants.ts) on the stores a design has: I1 no oversell, I2 one key one reservation, I3 holds,
 * I5 conservation, and for the durable design PostgreSQL = Redis once in-flight work has drained. The bench changes
 * stock only by seeding (PUT) and by reservations, and its TTLs outlast the run, so "supplied" is what it seeded and
 * is checked as a closed supply. Here, I4 as a client sees it: every confirm the client saw acknowledged is recorded
 * as sold, and every 201 is a recorded reservation; and the outbox (`outboxFailures`).
 */
import type pg from 'pg';
import type { RedisClient } from '../src/redis/client.js';
import { Keys } from '../src/redis/keys.js';
import { checkStores, pairKey, readPostgres, readRedis, type LocationFigures } from '../test/helpers/invariants.js';
import { isDurable, type Acked, type Design, type Supply } from './types.js';

export interface AuditResult {
  ok: boolean;
  checkedItems: number;
  failures: string[];
  totals: { supplied: number; sold: number; held: number };
  /** durable only: PostgreSQL and Redis agree on every item. */
  postgresEqualsRedis?: boolean;
}

export interface AuditInput {
  design: Design;
  /** Units seeded per item and location. */
  supplied: Supply;
  acked: Record<string, Acked>;
  ackedReservations: number;
  db: pg.Client | null;
  redis: RedisClient | null;
  /** `redis` is a Redis Cluster: the keys of each slot (generation markers) are its own. */
  cluster?: boolean;
  redisPrefix: string;
}

/** One look at the stores of a design (the orchestrator retries while a durable node's in-flight work drains). */
export async function audit(input: AuditInput): Promise<AuditResult> {
  const items = [...input.supplied.keys()];
  const pairs = [...input.supplied].flatMap(([item, locations]) => [...locations].map(([location, units]) => ({ item, location, units })));
  const withPostgres = input.db !== null && (isDurable(input.design) || input.design === 'pg-only');
  const withRedis = input.redis !== null && (isDurable(input.design) || input.design === 'redis-only');
  // The bench's database is the run's own: all of it is read.
  const postgres = withPostgres ? await readPostgres(input.db!) : null;
  const redis = withRedis ? await readRedis(input.redis!, new Keys(input.redisPrefix, input.cluster ?? false), items) : null;
  const check = checkStores(
    { postgres, redis },
    {
      // Redis counts sold units only from confirmed holds' tombstones, which it drops after
      // TOMBSTONE_RETENTION_SECONDS: with PostgreSQL beside it, Redis is held to equal PostgreSQL instead.
      redisMatchesPostgres: true,
      holdsWithinSupply: true,
      closedSupply: new Map(pairs.map((p) => [pairKey(p.item, p.location), p.units])),
    },
  );
  const failures = Object.entries(check.violations).flatMap(([id, vs]) => vs.map((v) => `${id} ${v}`));

  // What PostgreSQL says was sold and is held, else what Redis says.
  const byPair = new Map(check.figures.map((f) => [pairKey(f.itemId, f.location), f]));
  const sold = (f: LocationFigures | undefined) => (postgres ? f?.lines.confirmed : f?.redis.sold) ?? 0;
  const held = (f: LocationFigures | undefined) => (postgres ? f?.lines.pending : f?.redis.heldRaw) ?? 0;
  const store = postgres ? 'postgres' : 'redis';
  const soldOfItem = (item: string) =>
    [...(input.supplied.get(item)?.keys() ?? [])].reduce((total, location) => total + sold(byPair.get(pairKey(item, location))), 0);
  for (const [item, a] of Object.entries(input.acked)) {
    const units = soldOfItem(item);
    if (a.confirmed > units) failures.push(`I4 ${store} ${item}: the client saw ${a.confirmed} units confirmed, ${units} are recorded sold`);
  }
  if (postgres && input.ackedReservations > postgres.reservations.size) {
    failures.push(`I4 postgres: the client saw ${input.ackedReservations} reservations created, ${postgres.reservations.size} are recorded`);
  }
  if (postgres && isDurable(input.design)) failures.push(...(await outboxFailures(input.db!, input.design)));

  const totals = { supplied: 0, sold: 0, held: 0 };
  for (const p of pairs) {
    const f = byPair.get(pairKey(p.item, p.location));
    totals.supplied += p.units;
    totals.sold += sold(f);
    totals.held += held(f);
  }
  return {
    ok: failures.length === 0,
    checkedItems: items.length,
    failures: failures.slice(0, 20),
    totals,
    ...(postgres && redis ? { postgresEqualsRedis: check.differences.length === 0 } : {}),
  };
}

/**
 * The outbox as a durable design left it. With it: every subject's events numbered 1..n without a gap, every
 * reservation with one event per change PostgreSQL recorded (its `event_sequence`), every item with as many as its
 * `event_item_sequences` row handed out, and each stocked location's last stock.changed saying PostgreSQL's on-hand:
 * the rules of test/helpers/events.ts (expectOutboxConsistent), here in SQL, since a run leaves hundreds of thousands
 * of events. Without it (`durable-no-outbox`): no event at all, or the comparison would measure nothing.
 */
export async function outboxFailures(db: pg.Client, design: Design): Promise<string[]> {
  const { rows } = await db.query<Record<'events' | 'gapped' | 'reservations' | 'items' | 'locations', string>>(
    `WITH subjects AS (SELECT subject, count(*) AS n, max(sequence) AS last FROM events GROUP BY subject)
     SELECT (SELECT count(*) FROM events) AS events,
       (SELECT count(*) FROM subjects WHERE n <> last) AS gapped,
       (SELECT count(*) FROM reservations r LEFT JOIN subjects s ON s.subject = r.id::text
        WHERE coalesce(s.n, 0) <> r.event_sequence) AS reservations,
       (SELECT count(*) FROM event_item_sequences q LEFT JOIN subjects s ON s.subject = q.item_id
        WHERE coalesce(s.n, 0) <> q.sequence) AS items,
       (SELECT count(*) FROM stock st WHERE st.on_hand IS DISTINCT FROM (
          SELECT (e.data->>'onHand')::bigint FROM events e
          WHERE e.subject = st.item_id AND e.type = 'inventory.stock.changed' AND e.data->>'location' = st.location
          ORDER BY e.sequence DESC LIMIT 1)) AS locations`,
  );
  const n = Object.fromEntries(Object.entries(rows[0]!).map(([k, v]) => [k, Number(v)]));
  if (design === 'durable-no-outbox') return n.events! > 0 ? [`outbox: ${n.events} events appended by a design that appends none`] : [];
  const failures: string[] = [];
  if (n.gapped! > 0) failures.push(`outbox: ${n.gapped} subjects whose sequences have a gap`);
  if (n.reservations! > 0) failures.push(`outbox: ${n.reservations} reservations without exactly one event per recorded change`);
  if (n.items! > 0) failures.push(`outbox: ${n.items} items whose events do not match the sequences handed out`);
  if (n.locations! > 0) failures.push(`outbox: ${n.locations} stocked locations whose last stock.changed is not their on-hand`);
  return failures;
}

interface AvailabilityBody {
  onHand: number;
  reserved: number;
  available: number;
}

/** For a service at --url (stores unknown): the same I1 and I4 checks through GET availability. */
export async function auditOverHttp(url: string, supplied: Supply, acked: Record<string, Acked>, headers: Record<string, string>): Promise<AuditResult> {
  const failures: string[] = [];
  const totals = { supplied: 0, sold: 0, held: 0 };
  // Availability's top-level figures sum the item's locations.
  const items = [...supplied].map(([item, locations]): [string, number] => [item, [...locations.values()].reduce((a, b) => a + b, 0)]);
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
