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
  /**
   * A 503 that said nothing was applied (its `detail`). Any other 503 promises nothing: the service could not learn
   * whether PostgreSQL committed, or Redis' reply was lost after its script ran.
   */
  nothingApplied?: boolean;
  /** Reservation id of a reservation document answer. */
  id?: string;
  /** `status` of a reservation document answer. */
  docStatus?: string;
  replayed?: boolean;
  /** A later re-send of a key the client already had a 201 for (a client that lost the answer, or a double submit). */
  replay?: boolean;
  /** The reservation document's lines, expiry and version, to compare with what PostgreSQL stored. */
  lines?: DocumentLine[];
  expiresAt?: string;
  version?: number;
}

/** A line of a reservation document; `confirmedQuantity` only on a partly confirmed reservation's lines. */
export interface DocumentLine extends Line {
  confirmedQuantity?: number;
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

/** One call on one reservation (confirm, release or extend), every attempt the same request. */
export interface CallLog {
  reservationId: string;
  action: 'confirm' | 'release' | 'extend';
  /** Extend: the TTL asked for. */
  ttlSeconds?: number;
  /** The version sent as `If-Match`, if one was. */
  ifMatch?: number;
  /** Confirm: the lines listed (a partial confirm); absent, the whole reservation. */
  lines?: Line[];
  attempts: Attempt[];
}

/** One reservation of a release-by-reference answer. */
export interface ListedReservation {
  id: string;
  status: string;
  version: number;
  lines: DocumentLine[];
}

export interface ReferenceAttempt extends Attempt {
  /** The 200 answer's reference and items. */
  reference?: string;
  items?: ListedReservation[];
}

/** One `POST /reservations/release` by reference, every attempt the same request. */
export interface ReferenceReleaseLog {
  reference: string;
  attempts: ReferenceAttempt[];
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
  readonly calls: CallLog[] = [];
  readonly referenceReleases: ReferenceReleaseLog[] = [];
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


/** What a client knows of a reservation it holds: from its 201, then from each 200 to an extend. */
interface Held {
  id: string;
  version: number;
  expiresAtMs: number;
  lines: DocumentLine[];
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

/** Whether a 503 said nothing was applied (src/service: "nothing was applied, retry"). */
function saidNothingApplied(a: HttpAnswer): boolean {
  const b = a.body as { detail?: unknown } | undefined;
  return a.status === 503 && typeof b?.detail === 'string' && b.detail.includes('nothing was applied');
}

/** The reference and reservations of a 200 answer to a release by reference. */
function listedOf(a: HttpAnswer | null): Pick<ReferenceAttempt, 'reference' | 'items'> {
  const b = a?.body as { reference?: unknown; items?: unknown } | undefined;
  if (a?.status !== 200 || !Array.isArray(b?.items)) return {};
  const items = (b.items as { id?: unknown; status?: unknown; version?: unknown; lines?: unknown }[]).map((d) => ({
    id: String(d.id),
    status: String(d.status),
    version: Number(d.version),
    lines: d.lines as DocumentLine[],
  }));
  return { reference: String(b.reference), items };
}

/** A client should retry: 5xx, a network error, or a key whose first request is still in flight. */
function retryable(status: Outcome, code: string | undefined): boolean {
  return status === 'network' || status >= 500 || (status === 409 && code !== undefined && PROBLEM_RETRYABLE.has(code));
}

/** Definitive answers (not 5xx, not network, not "in flight"): what the client was told for good. */
export const definitive = (status: Outcome, code?: string): boolean => !retryable(status, code);

export const linesLabel = (lines: readonly Line[]): string => lines.map((l) => `${l.quantity}×${l.itemId}@${l.location}`).join(' + ');

/**
 * How long past the drain a create still unanswered keeps retrying: every unacknowledged create is retried with
 * its key and body until it gets a definitive answer (the drill checks how soon after recovery each did), and
 * this only bounds a drill whose service never recovers.
 */
const CREATE_RETRY_GRACE_MS = 20_000;

/**
 * The drill's load: `clients` concurrent shoppers (reserve 1–3 units of one or two SKUs with a short TTL, sometimes
 * extend it, then confirm (whole or in part), release (by id, or by reference) or walk away; retry 503s, network errors and "in use"
 * with the same request, like a careful client: a create until it gets a definitive answer), some re-sending keys
 * they already had answered, some placing orders (2–3 reservations under one reference, compensated by reference
 * or confirmed), plus one operator receiving stock; then closing buyers sell out every location. Bounded: no new
 * reservation starts after `durationMs`, and no request goes on past `drainMs` after that (a create's retries past
 * CREATE_RETRY_GRACE_MS).
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
      const nothingApplied = answer !== null && saidNothingApplied(answer);
      record({ node: base, sentAt, at: Date.now(), status, ...(code ? { code } : {}), ...(nothingApplied ? { nothingApplied } : {}) }, answer);
      if (!retryable(status, code)) return answer;
      const backoff = Math.min(50 * 2 ** attempt, 400) * (0.5 + random());
      if (Date.now() + backoff > until) return null;
      await sleep(backoff);
    }
  }

  const documentOf = (answer: HttpAnswer | null): Partial<Attempt> => {
    const doc = answer?.body as { id?: unknown; status?: unknown; lines?: unknown; expiresAt?: unknown; version?: unknown } | undefined;
    if (!answer || answer.status >= 300 || typeof doc?.id !== 'string') return {};
    return {
      id: doc.id,
      docStatus: String(doc.status),
      lines: doc.lines as DocumentLine[],
      expiresAt: String(doc.expiresAt),
      ...(typeof doc.version === 'number' ? { version: doc.version } : {}),
      ...(answer.headers['idempotent-replayed'] === 'true' ? { replayed: true } : {}),
    };
  };

  /** Creates (or re-sends) a key's reservation; what its 201 said, or null without one. */
  async function reserve(entry: KeyLog, node: { index: number }, replay: boolean): Promise<Held | null> {
    const answer = await send(
      node,
      // A re-send of an acknowledged key is a probe; a create is retried until it is answered for good.
      replay ? Math.min(Date.now() + 3_000, drainUntil) : drainUntil + CREATE_RETRY_GRACE_MS,
      (base) => http.request(base, 'POST', '/reservations', entry.body, { 'idempotency-key': entry.key }),
      (attempt, a) => entry.attempts.push({ ...attempt, ...documentOf(a), ...(replay ? { replay } : {}) }),
      true,
    );
    if (answer?.status !== 201) return null;
    const doc = documentOf(answer);
    return { id: doc.id!, version: doc.version ?? 1, expiresAtMs: Date.parse(doc.expiresAt!), lines: doc.lines ?? [] };
  }

  /** One call on a reservation, retried as the same request on a 503 or no answer; its 200 answer, or null. */
  async function call(entry: CallLog, node: { index: number }, body?: unknown): Promise<Partial<Attempt> | null> {
    o.log.calls.push(entry);
    const headers: Record<string, string> = entry.ifMatch === undefined ? {} : { 'if-match': `"${entry.ifMatch}"` };
    const answer = await send(
      node,
      Math.min(Date.now() + 15_000, drainUntil),
      (base) => http.request(base, 'POST', `/reservations/${entry.reservationId}/${entry.action}`, body, headers),
      (attempt, a) => entry.attempts.push({ ...attempt, ...documentOf(a) }),
      true,
    );
    return answer?.status === 200 ? documentOf(answer) : null;
  }

  /**
   * Confirms or releases a hold by its id. A confirm sometimes (`partly`) lists what was paid for: some of the pairs
   * held, each for 1 to all of its units (the rest is released).
   */
  async function settle(h: Held, action: 'confirm' | 'release', node: { index: number }, partly = false): Promise<void> {
    if (action === 'release' || !partly) {
      await call({ reservationId: h.id, action, attempts: [] }, node);
      return;
    }
    const picked = h.lines.filter(() => random() < 0.6);
    const lines = (picked.length > 0 ? picked : [h.lines[int(0, h.lines.length - 1)]!]).map((l) => ({
      itemId: l.itemId,
      location: l.location,
      quantity: int(1, l.quantity),
    }));
    const body = {
      lines: lines.map((l) => (l.location === 'default' && random() < 0.5 ? { itemId: l.itemId, quantity: l.quantity } : l)),
    };
    await call({ reservationId: h.id, action, lines, attempts: [] }, node, body);
  }

  /**
   * A slow payment: the hold's expiry moved to now + 2–5 s, half the time conditional on the version last seen
   * (`If-Match`). What a 200 says becomes what the client knows of the hold.
   */
  async function extend(h: Held, node: { index: number }): Promise<void> {
    const ttlSeconds = int(2, 5);
    const entry: CallLog = { reservationId: h.id, action: 'extend', ttlSeconds, attempts: [] };
    if (random() < 0.5) entry.ifMatch = h.version;
    const doc = await call(entry, node, { ttlSeconds });
    if (doc?.docStatus === 'pending' && doc.version !== undefined && doc.expiresAt !== undefined) {
      h.version = doc.version;
      h.expiresAtMs = Date.parse(doc.expiresAt);
    }
  }

  /** A saga's compensation: every pending reservation of the reference released, retried as the same request. */
  async function releaseReference(reference: string, node: { index: number }): Promise<void> {
    const entry: ReferenceReleaseLog = { reference, attempts: [] };
    o.log.referenceReleases.push(entry);
    await send(
      node,
      Math.min(Date.now() + 15_000, drainUntil),
      (base) => http.request(base, 'POST', '/reservations/release', { reference }),
      (attempt, a) => entry.attempts.push({ ...attempt, ...listedOf(a) }),
      true,
    );
  }

  /** Waits until the hold's expiry ± 200 ms, to race it. */
  const nearExpiry = (h: Held) => sleep(Math.max(0, h.expiresAtMs - Date.now() - 200 + random() * 400));

  /**
   * Before it is settled, a hold is sometimes extended, once or twice, mostly well inside its TTL, one in ten
   * racing its expiry. Only while new reservations start: an extension past the drain would keep units from the
   * closing buyers.
   */
  async function maybeExtend(h: Held, node: { index: number }): Promise<void> {
    for (let n = 0; n < 2 && random() < 0.3 && Date.now() < endAt; n++) {
      await (random() < 0.1 ? nearExpiry(h) : sleep(random() * 800));
      await extend(h, node);
    }
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

  /**
   * A cart; `short`: never a long hold. The load settles no long hold: a settle decided by a node that then dies is
   * resolved only once the hold's TTL has passed (src/jobs/sweeper.ts), after the drill's checks.
   */
  function newBody(reference: string, short = false): { body: ReserveBody; lines: Line[] | null } {
    if (spread.length > 0 && random() < 0.25) return allocatedBody(reference);
    const count = random() < 0.7 ? 1 : 2;
    const picked: Sku[] = [];
    while (picked.length < count) {
      const sku = o.skus[int(0, o.skus.length - 1)]!;
      if (!picked.includes(sku)) picked.push(sku);
    }
    const lines = picked.map((s) => ({ itemId: s.itemId, location: s.location, quantity: int(1, 3) }));
    const ttlSeconds = !short && random() < 0.03 ? int(40, 60) : int(2, 5);
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
      if (random() < 0.1) {
        await order(`${o.runId}-c${n}-${seq}`, node);
        continue;
      }
      const key = `${o.runId}-c${n}-${seq}`;
      const h = await cart(key, key, node);
      if (!h) {
        await sleep(20 + random() * 80);
        continue;
      }
      if (h.long) continue; // a long hold: still pending when the checks run
      const r = random();
      const action = r < 0.45 ? 'confirm' : r < 0.7 ? 'release' : null;
      await maybeExtend(h, node);
      if (!action) continue; // walks away: the hold expires
      // Mostly well inside the TTL; one in ten races the expiry.
      await (random() < 0.1 ? nearExpiry(h) : sleep(random() * 1_200));
      // A release is sometimes the compensation by reference (the cart's own: its key).
      if (action === 'release' && random() < 0.3) await releaseReference(key, node);
      else await settle(h, action, node, random() < 0.3);
    }
  }

  /** One reservation under `key` with `reference`, its key logged (and remembered for re-sends once acknowledged). */
  async function cart(key: string, reference: string, node: { index: number }, short = false): Promise<(Held & { long: boolean }) | null> {
    const { body, lines } = newBody(reference, short);
    const entry: KeyLog = { key, body, lines, attempts: [] };
    o.log.keys.set(key, entry);
    const double = random() < 0.03;
    const [h] = await Promise.all([
      reserve(entry, node, false),
      ...(double ? [reserve(entry, { index: node.index + 1 }, false)] : []),
    ]);
    if (!h) return null;
    acknowledged.push(entry);
    return { ...h, long: body.ttlSeconds > 30 };
  }

  /**
   * An order: 2–3 reservations under one reference (keys `<order>-0`, `-1`, …), sometimes extended, then
   * compensated by reference (after one was confirmed, or while a confirm of one races it), or confirmed each.
   */
  async function order(name: string, node: { index: number }): Promise<void> {
    const reference = `${name}-order`;
    const held: Held[] = [];
    const count = int(2, 3);
    for (let i = 0; i < count; i++) {
      const h = await cart(`${name}-${i}`, reference, node, true);
      if (h) held.push(h);
    }
    if (held.length === 0) return;
    for (const h of held) await maybeExtend(h, node);
    await (random() < 0.1 ? nearExpiry(held[0]!) : sleep(random() * 1_000));
    const r = random();
    if (r < 0.25) {
      await releaseReference(reference, node);
    } else if (r < 0.5) {
      await settle(held[0]!, 'confirm', node, random() < 0.3);
      await releaseReference(reference, node);
    } else if (r < 0.75) {
      await Promise.all([settle(held[0]!, 'confirm', node, random() < 0.3), releaseReference(reference, { index: node.index + 1 })]);
    } else {
      for (const h of held) await settle(h, 'confirm', node, random() < 0.3);
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
      const h = await reserve(entry, node, false);
      if (h) await settle(h, 'confirm', node);
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
