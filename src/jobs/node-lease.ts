import { randomBytes } from 'node:crypto';
import type { RedisClient } from '../redis/client.js';
import type { Keys } from '../redis/keys.js';

/** How long a lease outlives its last renewal: a process silent this long is taken as dead. */
export const LEASE_TTL_MS = 3_000;
/** How often a live process renews its lease (three tries within one TTL). */
export const LEASE_RENEW_MS = 1_000;

/** A fresh node id: 12 hex characters, random for each process start (a restarted process is a new node). */
export const newNodeId = (): string => randomBytes(6).toString('hex');

/**
 * This process's lease in Redis: the key `<prefix>node:<nodeId>` (src/redis/keys.ts), set with a TTL of
 * LEASE_TTL_MS and renewed every LEASE_RENEW_MS while the node runs, deleted when it closes. Work a node leaves in
 * Redis (a claim on an idempotency key, a stock intent) names its node id; another node asks `isAlive(nodeId)` to
 * tell work still in flight from work whose process died (kill -9, a lost machine), and takes the latter over at
 * once instead of waiting out a timeout. Redis' own TTL decides when a lease lapses: no local clock is compared
 * with another. A renewal that fails (Redis unreachable) is simply tried again at the next tick.
 *
 * Safety: a lease is only an optimisation for answering "still in flight". A lease can lapse while its owner
 * lives (an event-loop stall or a Redis blip longer than the TTL), so whoever acts on a lapsed lease must stay
 * correct if the owner goes on: exactly-once creation rests on PostgreSQL's unique key on idempotency_keys (a
 * retry whose first attempt commits late gets `conflict`, undoes its own decision and replays the first answer),
 * so a wrongly lapsed lease costs at most a duplicate decision that is undone, never a second reservation.
 */
export class NodeLease {
  private timer: NodeJS.Timeout | null = null;
  private renewing: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly redis: RedisClient,
    private readonly keys: Keys,
    readonly nodeId: string = newNodeId(),
    readonly ttlMs: number = LEASE_TTL_MS,
    private readonly renewMs: number = LEASE_RENEW_MS,
  ) {}

  /** This node's lease key. */
  get key(): string {
    return this.keys.node(this.nodeId);
  }

  /** True from `start()` until `stop()`: the node still stands behind the work it leaves in Redis. */
  get running(): boolean {
    return this.timer !== null;
  }

  /** Takes the lease and keeps renewing it (an unref'd timer: it never keeps the process alive). */
  start(): void {
    if (this.timer) return;
    const renew = () => {
      this.renewing = this.redis.set(this.key, '1', 'PX', this.ttlMs).catch(() => undefined);
    };
    renew();
    this.timer = setInterval(renew, this.renewMs);
    this.timer.unref();
  }

  /** Stops renewing and deletes the lease (graceful close: this node's leftovers are free at once). */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.renewing; // a renewal in flight must not set the key again after the delete
    await this.redis.del(this.key).catch(() => undefined);
  }

  /** Whether node `nodeId`'s lease exists now (this node's own included). Rejects when Redis cannot be asked. */
  async isAlive(nodeId: string): Promise<boolean> {
    return (await this.redis.exists(this.keys.node(nodeId))) === 1;
  }
}
