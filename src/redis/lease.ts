import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { RedisClient } from './client.js';
import { defineScripts } from './scripts.js';
import { ScriptStatus } from './status.js';

/**
 * A lease one node at a time holds: a Redis key holding its owner's token with a TTL (src/redis/lua/lease.lua),
 * taken when free, renewed by its owner only, lapsing on its own when its owner dies. It makes one node the active
 * relay of a transport (the others stand by; given up on close so a standby takes over at once), and one node at
 * a time run a reconciliation pass (kept while the pass lasts).
 *
 * The owner counts the lease as held until the TTL measured from before its last successful renewal was sent, on
 * its own monotonic clock: it stops before Redis lets another node take over (unless its clock runs slow or it
 * stalls mid-send). Two relays active for a moment cost duplicates, never a loss or a reordering: each delivers
 * in order from the cursor, which only moves forward; two reconciliation passes cost only the work.
 */
export class Lease {
  private heldUntil = 0;
  private readonly run: ReturnType<typeof defineScripts>;
  /** Distinguishes this lease from another of the same process (a second relay instance in a test). */
  readonly owner: string;

  constructor(
    redis: RedisClient,
    readonly key: string,
    nodeId: string,
    readonly ttlMs: number,
  ) {
    this.run = defineScripts(redis);
    this.owner = `${nodeId}:${randomBytes(4).toString('hex')}`;
  }

  /** True while the lease is this owner's. */
  get held(): boolean {
    return performance.now() < this.heldUntil;
  }

  /** Takes the lease if free, or renews it if this owner's; resolves to whether it holds it now. */
  async renew(): Promise<boolean> {
    const sentAt = performance.now();
    try {
      const [status] = await this.run('lease', [this.key], [this.owner, this.ttlMs]);
      this.heldUntil = status === ScriptStatus.OK ? sentAt + this.ttlMs : 0;
    } catch {
      // Redis unreachable: held still until its TTL would have run out; standbys cannot take it meanwhile.
    }
    return this.held;
  }

  /** Gives the lease up (if still this owner's), so a standby takes over without waiting for the TTL. */
  async release(): Promise<void> {
    this.heldUntil = 0;
    await this.run('lease', [this.key], [this.owner, 0]).catch(() => undefined);
  }
}
