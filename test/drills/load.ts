import { setTimeout as sleep } from 'node:timers/promises';
import { HttpClient, NetworkError, type HttpAnswer } from './http-client.js';
import { mulberry32 } from '../helpers/random.js';

/** One (item, location) the load sells. */
export interface Sku {
  itemId: string;
  location: string;
}

export interface Line {
  itemId: string;
  location: string;
  quantity: number;
}

export interface ReserveBody {
  lines: { itemId: string; location?: string; quantity: number }[];
  ttlSeconds: number;
  reference: string;
  allocation?: { strategy: 'ordered' | 'most_available' | 'single_location'; locations?: string[]; split?: boolean };
  priority?: 'high';
}

/** An HTTP status, or `network` when no answer came back (the effect on the server is unknown). */
export type Outcome = number | 'network';

/** One request as the client saw it. Times are the client's Date.now(). */
export interface Attempt {
  node: string;
  sentAt: number;
  at: number;
  status: Outcome;
  /** problem+json `code` of an error answer. */
  code?: string;
  /** Reservation id of a reservation document answer. */
  id?: string;
  /** `status` of a reservation document answer. */
  docStatus?: string;
  replayed?: boolean;
  /** A later re-send of a key the client already had a 201 for (a client that lost the answer, or a double submit). */
  replay?: boolean;
  /** The reservation document's lines and expiry, to compare with what PostgreSQL stored. */
  lines?: Line[];
  expiresAt?: string;
}

/** Every answer one Idempotency-Key got. */
export interface KeyLog {
  key: string;
  body: ReserveBody;
  /** The lines asked for; null when the service allocates them (its 201 documents say where: `heldLines`). */
  lines: Line[] | null;
  attempts: Attempt[];
}

/** What a key's reservation holds: its lines, or for an allocated one what its first 201 document said. */
export function heldLines(k: KeyLog): Line[] {
  return k.lines ?? k.attempts.find((a) => a.status === 201 && a.lines)?.lines ?? [];
}

export interface SettleLog {
  reservationId: string;
  action: 'confirm' | 'release';
  attempts: Attempt[];
}

/** One stock-change request; `reason` is unique per attempt, so the ledger row (if any) can be found. */
export interface StockAttempt extends Attempt {
  mode: 'set' | 'adjust';
  itemId: string;
  location: string;
  amount: number;
  reason: string | null;
}

/** The clients' own record of everything they were told. The checks hold the system to it. */
export class ClientLog {
  readonly keys = new Map<string, KeyLog>();
  readonly settles: SettleLog[] = [];
  readonly stock: StockAttempt[] = [];
  requests = 0;
  /** 2xx answers to mutations: what the system acknowledged. */
  acks = 0;
  /** 5xx answers and network errors. */
  faults = 0;
  readonly statusCounts = new Map<string, number>();

  count(status: Outcome, mutation: boolean): void {
    this.requests++;
    if (status === 'network' || status >= 500) this.faults++;
    else if (mutation && status >= 200 && status < 300) this.acks++;
    const label = String(status);
    this.statusCounts.set(label, (this.statusCounts.get(label) ?? 0) + 1);
  }

  /** When the first reservation was acknowledged for a request sent at or after `since` (recovery time). */
  firstCreatedAfter(since: number): number | null {
    let first: number | null = null;
    for (const k of this.keys.values()) {
      for (const a of k.attempts) {
        if (a.status === 201 && a.sentAt >= since && (first === null || a.at < first)) first = a.at;
      }
    }
    return first;
  }
}


export interface LoadOptions {
  runId: string;
  seed: number;
  /** Concurrent reservation clients. */
  clients: number;
  /** New reservations start for this long; then the load drains. */
  durationMs: number;
  /**
   * How long after the end a request still in its retry loop keeps retrying before the client gives up; the
   * closing buyers work through this window too. A create (a new key) keeps retrying longer: see runLoad.
   */
  drainMs: number;
  skus: readonly Sku[];
  /** Base URLs of the API nodes; client n starts on node n mod count and fails over on network errors. */
  nodes: readonly string[];
  /** Restock a location (by a positive adjustment) when its on-hand falls below this. */
  restockBelow: number;
  log: ClientLog;
}

const PROBLEM_RETRYABLE = new Set(['unavailable', 'idempotency_key_in_use']);

function problemCode(a: HttpAnswer): string | undefined {
  const b = a.body as { code?: unknown } | undefined;
  return typeof b?.code === 'string' ? b.code : undefined;
}

/** A client should retry: 5xx, a network error, or a key whose first request is still in flight. */
function retryable(status: Outcome, code: string | undefined): boolean {
  return status === 'network' || status >= 500 || (status === 409 && code !== undefined && PROBLEM_RETRYABLE.has(code));
}

/**
 * How long past the drain a create still unanswered keeps retrying: every unacknowledged create is retried with
 * its key and body until it gets a definitive answer (the drill checks how soon after recovery each did), and
 * this only bounds a drill whose service never recovers.
 */
const CREATE_RETRY_GRACE_MS = 20_000;

/**
 * The drill's load: `clients` concurrent shoppers (reserve 1–3 units of one or two SKUs with a short TTL, then
 * confirm, release or walk away; retry 503s, network errors and "in use" with the same Idempotency-Key and body,
 * like a careful client: a create until it gets a definitive answer), some re-sending keys they already had
 * answered, plus one operator receiving stock; then closing buyers sell out every location. Bounded: no new
 * reservation starts after `durationMs`, and no request goes on past `drainMs` after that (a create's retries
 * past CREATE_RETRY_GRACE_MS).
 */
export async function runLoad(o: LoadOptions): Promise<void> {
  // Seeded, so a failing drill's choices replay from its printed seed.
  const random = mulberry32(o.seed).next;
  const int = (min: number, max: number) => min + Math.floor(random() * (max - min + 1));
  const http = new HttpClient(4_000);
  const startedAt = Date.now();
  const endAt = startedAt + o.durationMs;
  const drainUntil = endAt + o.drainMs;
  const acknowledged: KeyLog[] = [];

  /** Sends until a definitive answer or `until`; null when it gave up. */
  async function send(
    node: { index: number },
    until: number,
    request: (base: string) => Promise<HttpAnswer>,
    record: (attempt: Attempt, answer: HttpAnswer | null) => void,
    mutation: boolean,
  ): Promise<HttpAnswer | null> {
    for (let attempt = 0; ; attempt++) {
      const base = o.nodes[node.index % o.nodes.length]!;
      const sentAt = Date.now();
      let answer: HttpAnswer | null = null;
      let status: Outcome;
      try {
        answer = await request(base);
        status = answer.status;
      } catch (err) {
        if (!(err instanceof NetworkError)) throw err;
        status = 'network';
        node.index++; // fail over to the next node (a no-op with one node)
      }
      const code = answer ? problemCode(answer) : undefined;
      o.log.count(status, mutation);
      record({ node: base, sentAt, at: Date.now(), status, ...(code ? { code } : {}) }, answer);
      if (!retryable(status, code)) return answer;
      const backoff = Math.min(50 * 2 ** attempt, 400) * (0.5 + random());
      if (Date.now() + backoff > until) return null;
      await sleep(backoff);
    }
  }

  const documentOf = (answer: HttpAnswer | null): Partial<Attempt> => {
    const doc = answer?.body as { id?: unknown; status?: unknown; lines?: unknown; expiresAt?: unknown } | undefined;
    if (!answer || answer.status >= 300 || typeof doc?.id !== 'string') return {};
    return {
      id: doc.id,
      docStatus: String(doc.status),
      lines: doc.lines as Line[],
      expiresAt: String(doc.expiresAt),
      ...(answer.headers['idempotent-replayed'] === 'true' ? { replayed: true } : {}),
    };
  };

  async function reserve(entry: KeyLog, node: { index: number }, replay: boolean): Promise<string | null> {
    const answer = await send(
      node,
      // A re-send of an acknowledged key is a probe; a create is retried until it is answered for good.
      replay ? Math.min(Date.now() + 3_000, drainUntil) : drainUntil + CREATE_RETRY_GRACE_MS,
      (base) => http.request(base, 'POST', '/reservations', entry.body, { 'idempotency-key': entry.key }),
      (attempt, a) => entry.attempts.push({ ...attempt, ...documentOf(a), ...(replay ? { replay } : {}) }),
      true,
    );
    return answer?.status === 201 ? ((answer.body as { id: string }).id ?? null) : null;
  }

  async function settle(id: string, action: 'confirm' | 'release', node: { index: number }): Promise<void> {
    const entry: SettleLog = { reservationId: id, action, attempts: [] };
    o.log.settles.push(entry);
    await send(
      node,
      Math.min(Date.now() + 15_000, drainUntil),
      (base) => http.request(base, 'POST', `/reservations/${id}/${action}`),
      (attempt, a) => entry.attempts.push({ ...attempt, ...documentOf(a) }),
      true,
    );
  }

  /** Items the load sells at several locations, with those locations. */
  const spread = [...new Set(o.skus.map((s) => s.itemId))]
    .map((itemId) => ({ itemId, locations: o.skus.filter((s) => s.itemId === itemId).map((s) => s.location) }))
    .filter((i) => i.locations.length > 1);
  /** High priority may take safety stock; a fifth of the shoppers ask for it. */
  const priority = (): Pick<ReserveBody, 'priority'> => (random() < 0.2 ? { priority: 'high' } : {});

  /** A cart whose first line the service allocates over its item's locations (api.md, "Allocation across locations"). */
  function allocatedBody(reference: string): { body: ReserveBody; lines: null } {
    const item = spread[int(0, spread.length - 1)]!;
    const strategy = (['ordered', 'most_available', 'single_location'] as const)[int(0, 2)]!;
    const locations = random() < 0.5 ? item.locations : [...item.locations].reverse();
    const allocation: NonNullable<ReserveBody['allocation']> = { strategy };
    if (strategy !== 'most_available' || random() < 0.5) allocation.locations = locations;
    if (strategy !== 'single_location' && random() < 0.5) allocation.split = true;
    const others = o.skus.filter((s) => s.itemId !== item.itemId);
    const lines: ReserveBody['lines'] = [{ itemId: item.itemId, quantity: int(1, 3) }];
    if (others.length > 0 && random() < 0.3) {
      const s = others[int(0, others.length - 1)]!;
      lines.push({ itemId: s.itemId, location: s.location, quantity: int(1, 3) });
    }
    return { lines: null, body: { lines, ttlSeconds: int(2, 5), reference, allocation, ...priority() } };
  }

  function newBody(reference: string): { body: ReserveBody; lines: Line[] | null } {
    if (spread.length > 0 && random() < 0.25) return allocatedBody(reference);
    const count = random() < 0.7 ? 1 : 2;
    const picked: Sku[] = [];
    while (picked.length < count) {
      const sku = o.skus[int(0, o.skus.length - 1)]!;
      if (!picked.includes(sku)) picked.push(sku);
    }
    const lines = picked.map((s) => ({ itemId: s.itemId, location: s.location, quantity: int(1, 3) }));
    const ttlSeconds = random() < 0.03 ? int(40, 60) : int(2, 5);
    return {
      lines,
      body: {
        lines: lines.map((l) =>
          l.location === 'default' && random() < 0.5 ? { itemId: l.itemId, quantity: l.quantity } : { ...l },
        ),
        ttlSeconds,
        reference,
        ...priority(),
      },
    };
  }

  async function shopper(n: number): Promise<void> {
    const node = { index: n };
    await sleep(random() * 200); // do not all start in the same millisecond
    for (let seq = 0; Date.now() < endAt; seq++) {
      if (acknowledged.length > 0 && random() < 0.04) {
        // A client that never saw its answer, or a retried form post: the same key and body again.
        await reserve(acknowledged[int(0, acknowledged.length - 1)]!, node, true);
        continue;
      }
      const key = `${o.runId}-c${n}-${seq}`;
      const { body, lines } = newBody(key);
      const entry: KeyLog = { key, body, lines, attempts: [] };
      o.log.keys.set(key, entry);
      const double = random() < 0.03;
      const [id] = await Promise.all([
        reserve(entry, node, false),
        ...(double ? [reserve(entry, { index: node.index + 1 }, false)] : []),
      ]);
      if (!id) {
        await sleep(20 + random() * 80);
        continue;
      }
      acknowledged.push(entry);
      if (body.ttlSeconds > 30) continue; // a long hold: still pending when the checks run
      const r = random();
      const action = r < 0.45 ? 'confirm' : r < 0.7 ? 'release' : null;
      if (!action) continue; // walks away: the hold expires
      // Mostly well inside the TTL; one in ten races the expiry.
      const delay = random() < 0.1 ? body.ttlSeconds * 1000 - 200 + random() * 400 : random() * 1_200;
      await sleep(delay);
      await settle(id, action, node);
    }
  }

  /**
   * After the load, buys every unit the service still offers at one location (confirming each purchase), until
   * the drain ends: by then every short hold has expired and its units were bought too. Only phantom units,
   * ones Redis offers but PostgreSQL never recorded as supplied, can then push sales past supply (I1).
   */
  async function closingBuyer(sku: Sku, n: number): Promise<void> {
    const node = { index: n };
    for (let round = 0; Date.now() < drainUntil; round++) {
      const read = await send(node, drainUntil, (base) => http.request(base, 'GET', `/items/${sku.itemId}/availability`), () => {}, false);
      // High priority: the closing buyers take the safety stock too.
      const doc = read?.status === 200 ? (read.body as { locations: { location: string; availableHighPriority: number }[] }) : null;
      const available = doc?.locations.find((l) => l.location === sku.location)?.availableHighPriority ?? 0;
      if (available === 0) {
        await sleep(200);
        continue;
      }
      const key = `${o.runId}-closing-${n}-${round}`;
      const lines = [{ itemId: sku.itemId, location: sku.location, quantity: Math.min(available, 1_000_000) }];
      const entry: KeyLog = { key, body: { lines, ttlSeconds: 30, reference: key, priority: 'high' }, lines, attempts: [] };
      o.log.keys.set(key, entry);
      const id = await reserve(entry, node, false);
      if (id) await settle(id, 'confirm', node);
    }
  }

  /**
   * Receiving and returns: every 50 ms a small positive adjustment at one location, a restock when it runs low.
   * Works against the last node (the one the two-node drill kills), so a stock change is in flight at the fault.
   */
  async function operator(): Promise<void> {
    const node = { index: o.nodes.length - 1 };
    for (let n = 0; Date.now() < endAt; n++) {
      await sleep(50);
      const sku = o.skus[n % o.skus.length]!;
      const read = await send(node, Math.min(Date.now() + 1_000, drainUntil), (base) => http.request(base, 'GET', `/items/${sku.itemId}/availability`), () => {}, false);
      const doc = read?.status === 200 ? (read.body as { locations: { location: string; onHand: number }[] }) : null;
      const onHand = doc?.locations.find((l) => l.location === sku.location)?.onHand;
      if (onHand === undefined) continue;
      const delta = onHand < o.restockBelow ? int(20, 50) : int(1, 3);
      // Not idempotent, so only a 503 (which promises nothing was applied) is retried, with a new reason each time.
      for (let attempt = 0; attempt < 5; attempt++) {
        const reason = `${o.runId}:restock:${n}:${attempt}`;
        const base = o.nodes[node.index % o.nodes.length]!;
        const sentAt = Date.now();
        let status: Outcome;
        let code: string | undefined;
        try {
          const answer = await http.request(base, 'POST', `/items/${sku.itemId}/stock/adjustments`, {
            delta,
            location: sku.location,
            reason,
          });
          status = answer.status;
          code = problemCode(answer);
        } catch (err) {
          if (!(err instanceof NetworkError)) throw err;
          status = 'network';
          node.index++;
        }
        o.log.count(status, true);
        o.log.stock.push({
          node: base,
          sentAt,
          at: Date.now(),
          status,
          ...(code ? { code } : {}),
          mode: 'adjust',
          itemId: sku.itemId,
          location: sku.location,
          amount: delta,
          reason,
        });
        if (status !== 503 || Date.now() > endAt) break;
        await sleep(100);
      }
    }
  }

  try {
    await Promise.all([
      ...Array.from({ length: o.clients }, (_, n) => shopper(n)),
      operator(),
      (async () => {
        await sleep(Math.max(0, endAt - Date.now()));
        await Promise.all(o.skus.map((sku, n) => closingBuyer(sku, n)));
      })(),
    ]);
  } finally {
    http.close();
  }
}

/**
 * Stocks each SKU through the API (acknowledged stock changes, logged like the load's); every other SKU keeps
 * `safetyStock` of it for high-priority reservations.
 */
export async function seedStock(base: string, skus: readonly Sku[], quantity: number, safetyStock: number, log: ClientLog): Promise<void> {
  const http = new HttpClient(5_000);
  try {
    for (const [n, sku] of skus.entries()) {
      const sentAt = Date.now();
      const safety = n % 2 === 0 ? { safetyStock } : {};
      const answer = await http.request(base, 'PUT', `/items/${sku.itemId}/stock`, { quantity, location: sku.location, ...safety });
      log.count(answer.status, true);
      log.stock.push({ node: base, sentAt, at: Date.now(), status: answer.status, mode: 'set', ...sku, amount: quantity, reason: null });
      if (answer.status !== 200) throw new Error(`seeding ${sku.itemId}@${sku.location}: ${answer.status} ${JSON.stringify(answer.body)}`);
    }
  } finally {
    http.close();
  }
}
