import { SLOT_COUNT, slotOf, slotTag } from './slots.js';

/**
 * The only place Redis keys are made. Everything about one item shares the hash tag `{i:<itemId>}`, so one
 * script can decide on all its locations atomically and Redis Cluster keeps an item on one node.
 *
 * Every script touches the keys of one group: on Redis Cluster a group is a hash slot, on a single Redis there is
 * one group (a single Redis is a cluster of one slot owner). State a script must see beside any key (the generation
 * marker, the rebuild's token, the set of stocked items) is kept once per group, under a tag of that slot.
 */
export interface ItemKeys {
  /** hash: on-hand, reserved and pending supply per location (fields and values: layout.ts) */
  stock: string;
  /** hash: one hold per reservation line (fields and values: layout.ts) */
  holds: string;
  /** sorted set: hold field → when it next needs attention (expiry, or tombstone removal) */
  exp: string;
  /** hash: stock decisions whose fate is still open, by op id (values: layout.ts; judged by reconciliation) */
  intents: string;
}

/** The generation marker's name in its group (keys.ts' `inGroup`). */
const MARKER = 'generation';

export class Keys {
  /** Every group: the slots of a cluster, or the one group of a single Redis. */
  readonly groups: readonly number[];

  constructor(
    readonly prefix: string,
    /** Redis Cluster: groups are hash slots. */
    readonly cluster = false,
  ) {
    this.groups = cluster ? Array.from({ length: SLOT_COUNT }, (_, slot) => slot) : [0];
  }

  /** The group of a key: its slot on a cluster, the one group on a single Redis. */
  groupOf(key: string): number {
    return this.cluster ? slotOf(key) : 0;
  }

  private inGroup(group: number, name: string): string {
    return this.cluster ? `${this.prefix}{${slotTag(group)}}${name}` : `${this.prefix}${name}`;
  }

  /**
   * The generation of PostgreSQL state this group was rebuilt from; missing means Redis lost its state. On a cluster
   * the value also names the master that held the slot then, and its process (`<generation>@<node id>@<run_id>`): a
   * replica promoted since (which may have missed the last writes) finds another id and reads it as missing
   * (includes/common.lua), and the master restarted from its files is caught by its connection's check
   * (cluster_server_check.lua).
   */
  markerOf(group: number): string {
    return this.inGroup(group, MARKER);
  }

  /**
   * A cluster's markers' keys without their slot's hash tag, `[before, after]`: the per-connection check builds
   * every slot's of its node from them (cluster_server_check.lua).
   */
  get markerAroundTag(): [string, string] {
    return [this.prefix, MARKER];
  }

  /** The first group's marker: a single Redis' only one. */
  get marker(): string {
    return this.markerOf(0);
  }

  /**
   * A single Redis' server the state was rebuilt on (its `run_id`): a server that restarted from its files, or a
   * replica promoted in its place, has another, and may lack writes the one before acknowledged (server_check.lua).
   */
  get server(): string {
    return this.inGroup(0, 'server');
  }

  /** Set while a rebuild is writing; the marker is only set if this survived (no flush mid-rebuild). */
  rebuildingOf(group: number): string {
    return this.inGroup(group, 'rebuilding');
  }

  /**
   * set: every item id stocked in this group (added by the stock script and by the rebuild), so reconciliation
   * lists items without scanning a keyspace that is mostly idempotency records and reservation headers.
   */
  itemsOf(group: number): string {
    return this.inGroup(group, 'items');
  }

  /** The first group's set: a single Redis' only one. */
  get items(): string {
    return this.itemsOf(0);
  }

  /** Held by the one node that rebuilds. */
  get rebuildLock(): string {
    return `${this.prefix}rebuild-lock`;
  }

  /** string: the lease of the node running the periodic reconciliation (src/redis/lease.ts), its owner's token. */
  get reconcileLock(): string {
    return `${this.prefix}reconcile-lock`;
  }

  /**
   * A node's lease (src/jobs/node-lease.ts): exists while the process `nodeId` is alive and renewing it. Claims on
   * idempotency keys name their node, so a duplicate can tell a request still in flight from one whose process died.
   */
  node(nodeId: string): string {
    return `${this.prefix}node:${nodeId}`;
  }

  /**
   * string: the lease of the one node relaying events to `transport` (src/redis/lease.ts), holding its
   * owner's token.
   */
  relayLease(transport: string): string {
    return `${this.prefix}relay:${transport}`;
  }

  /** Held by the node pruning delivered events (src/events/pruner.ts). */
  get eventsPruneLock(): string {
    return `${this.prefix}events-prune-lock`;
  }

  /** Prefix of the rate limiter's counters (one per credential or client IP). */
  get rateLimit(): string {
    return `${this.prefix}ratelimit:`;
  }

  item(itemId: string): ItemKeys {
    const tag = `${this.prefix}{i:${itemId}}`;
    return { stock: `${tag}:stock`, holds: `${tag}:holds`, exp: `${tag}:exp`, intents: `${tag}:intents` };
  }

  /** Pattern matching every item key (for the rebuild's clean-up). */
  get itemPattern(): string {
    return `${this.prefix}{i:*`;
  }

  /**
   * hash: a reservation's header (reference, metadata, lines, times; fields: layout.ts), written by the reserve
   * script so confirm and release need no PostgreSQL read. A cache: PostgreSQL has the record, and a missing
   * header means "ask PostgreSQL".
   */
  reservation(id: string): string {
    return `${this.prefix}{r:${id}}`;
  }

  /**
   * string: the idempotency record (layout.ts). `scope` is the client credential's name (the anonymous scope when
   * authentication is off).
   */
  idempotency(scope: string, key: string): string {
    return `${this.prefix}idem:${scope}:${key}`;
  }
}
