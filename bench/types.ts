/** What the benchmark's processes (orchestrator, service under test, load generator) say to each other. */

/**
 * `durable-unbounded`: the durable service with WRITER_MAX_QUEUE=0 (no bound on the writes it holds), run only in
 * the scenarios that name it, to compare with the bound on under the same load.
 * `durable-no-outbox`: the durable service whose batch statement appends no events (BuildOptions.appendEvents), run
 * only in the scenarios that name it, to measure what the outbox costs.
 * `durable-cluster`: the durable service on a private Redis Cluster of 3 masters + 3 replicas (REDIS_CLUSTER_NODES;
 * the harness starts it and tears it down), run only in the scenarios that name it, against `durable` on one Redis.
 */
export const designNames = ['durable', 'durable-no-outbox', 'durable-unbounded', 'durable-cluster', 'pg-only', 'redis-only'] as const;
/** `external`: a service at `--url` the bench did not start (its design is unknown to it). */
export type Design = (typeof designNames)[number] | 'external';
/** The designs a scenario runs against unless it names its own. */
export const standardDesigns: readonly Design[] = ['durable', 'pg-only', 'redis-only'];
/** The designs that measure what the outbox costs: the durable service with it, and without it. */
const withAndWithoutOutbox: readonly Design[] = [...standardDesigns, 'durable-no-outbox'];
/** Carts spread over the cluster's slots; flash64's one SKU lives in one slot (the cluster's limit). */
const alsoOnCluster: readonly Design[] = [...withAndWithoutOutbox, 'durable-cluster'];
/** This service, with PostgreSQL and Redis both holding state (the bench holds them to agree). */
export const isDurable = (design: Design): boolean =>
  design === 'durable' || design === 'durable-no-outbox' || design === 'durable-unbounded' || design === 'durable-cluster';
/** The design whose Redis is the private cluster (the others share the single Redis). */
export const onCluster = (design: Design): boolean => design === 'durable-cluster';

export const scenarioNames = ['reserve64', 'reserve16', 'reserve4', 'flash', 'flash64', 'carts', 'carts-allocated', 'reads', 'overload'] as const;
export type ScenarioName = (typeof scenarioNames)[number];

export type LoadKind = 'flash' | 'carts' | 'reads';

export interface Scenario {
  name: ScenarioName;
  kind: LoadKind;
  connections: number;
  description: string;
  /** Units of the flash SKU (kind flash); FLASH_UNITS unless set. */
  units?: number;
  /** Kind flash: every request a reservation, none confirmed or released (issue 15's measure). */
  reserveOnly?: boolean;
  /** The designs it runs against; `standardDesigns` unless set. */
  designs?: readonly Design[];
  /** Carts whose lines name no location, allocated by the service this way over ALLOCATED_SKU_UNITS' locations. */
  allocation?: AllocationSpec;
}

/** A reservation's `allocation` (api.md, "Allocation across locations"). */
export interface AllocationSpec {
  strategy: 'ordered' | 'most_available' | 'single_location';
  locations?: string[];
  split?: boolean;
}

/** The catalogue (bench/README.md describes each). */
export const scenarios: Record<ScenarioName, Scenario> = {
  // Issue 15's measure: every request a durable 201 (stock that never runs out), so the headline counts only the
  // work users pay for; at 64, 16 and 4 connections (high, moderate and low load).
  ...reserveOnlyAt(64),
  ...reserveOnlyAt(16),
  ...reserveOnlyAt(4),
  flash: {
    name: 'flash',
    kind: 'flash',
    connections: 1000,
    designs: withAndWithoutOutbox,
    description: 'flash sale: one SKU, 10,000 units, 1,000 connections reserving 1 unit, then half confirm, half release',
  },
  flash64: {
    name: 'flash64',
    kind: 'flash',
    connections: 64,
    designs: alsoOnCluster,
    description: 'the same flash sale at 64 connections (the concurrency of the issue-3 target)',
  },
  carts: {
    name: 'carts',
    kind: 'carts',
    connections: 64,
    designs: alsoOnCluster,
    description: 'carts of 2-5 lines (1-2 units each) over 10,000 SKUs, then half confirm, half release',
  },
  'carts-allocated': {
    name: 'carts-allocated',
    kind: 'carts',
    connections: 64,
    allocation: { strategy: 'most_available', split: true },
    // pg-only has no allocation of its own to compare: its baseline decides in SQL per named location.
    designs: ['durable', 'redis-only'],
    description:
      'the carts, over SKUs stocked at 3 locations, each line allocated by the service (most_available, split), then half confirm, half release',
  },
  reads: {
    name: 'reads',
    kind: 'reads',
    connections: 64,
    description: '90% availability reads / 10% one-line reservations over 10,000 SKUs',
  },
  overload: {
    name: 'overload',
    kind: 'flash',
    connections: 2000,
    units: 1_000_000_000,
    designs: ['durable', 'durable-unbounded'],
    description:
      'beyond saturation: the flash sale at 2,000 connections on a SKU that never sells out, with WRITER_MAX_QUEUE and without',
  },
};

function reserveOnlyAt(connections: 64 | 16 | 4): Record<`reserve${typeof connections}`, Scenario> {
  const name = `reserve${connections}` as const;
  return {
    [name]: {
      name,
      kind: 'flash',
      connections,
      units: 1_000_000_000,
      reserveOnly: true,
      description: `one SKU that never sells out, ${connections} connections, every request a 1-unit reservation (kept): every answer a durable 201`,
    },
  } as Record<`reserve${typeof connections}`, Scenario>;
}

/** Which scenarios of `names` run against `design`. */
export const scenariosOf = (design: Design, names: readonly ScenarioName[]): ScenarioName[] =>
  names.filter((n) => design === 'external' || (scenarios[n].designs ?? standardDesigns).includes(design));

/** Units the flash SKU starts with (issue 3). */
export const FLASH_UNITS = 10_000;
/** Units each cart SKU starts with: enough that carts measure the multi-line path, not sell-outs. */
export const CART_SKU_UNITS = 100_000;
/**
 * Units each allocated-cart SKU starts with, per location: uneven, so that most_available ranks them; enough that
 * the run measures allocation, not sell-outs (so a line is rarely split: splitting is the same decision's cost).
 */
export const ALLOCATED_SKU_UNITS: Readonly<Record<string, number>> = { default: 100_000, 'wh-2': 60_000, 'wh-3': 30_000 };

/** Units supplied per item and location: what the audit holds the stores to (a closed supply). */
export type Supply = Map<string, Map<string, number>>;

export function addSupply(supply: Supply, itemId: string, location: string, units: number): void {
  let locations = supply.get(itemId);
  if (!locations) supply.set(itemId, (locations = new Map()));
  locations.set(location, units);
}

export interface LoadSpec {
  url: string;
  kind: LoadKind;
  connections: number;
  durationSeconds: number;
  /** Fixed overall rate (requests/s); absent: as fast as the service answers (closed loop). */
  overallRate?: number;
  /** The flash SKU (kind flash). */
  flashItem: string;
  /** Kind flash: reserve only (Scenario.reserveOnly). */
  reserveOnly?: boolean;
  /** Cart SKUs are `${skuPrefix}${0..skuCount-1}` (kinds carts, reads). */
  skuPrefix: string;
  /** Carts whose lines name no location carry this `allocation`. */
  allocation?: AllocationSpec;
  skuCount: number;
  /** Idempotency keys are `${keyPrefix}${n}`: unique per request across the whole run. */
  keyPrefix: string;
  ttlSeconds: number;
  seed: number;
  /** Per-interval throughput and latency (the soak's timeline). */
  timelineSeconds?: number;
  headers?: Record<string, string>;
}

export interface Percentiles {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

export type OpName = 'reserve' | 'confirm' | 'release' | 'read';

export interface OpStats {
  latencyMs: Percentiles;
  statuses: Record<string, number>;
}

/** Units per item the client saw acknowledged (2xx): what the store must have recorded at least. */
export interface Acked {
  reserved: number;
  confirmed: number;
  released: number;
}

export interface TimelinePoint {
  t: number;
  throughput: number;
  p99: number;
}

export interface LoadResult {
  elapsedSeconds: number;
  responses: number;
  throughput: number;
  /** 2xx mutations (reserve 201, confirm/release 200) per second: acknowledged writes. */
  writesPerSecond: number;
  latencyMs: Percentiles;
  /** Reservations created (201) per second: what a flash sale beyond saturation is for. */
  createdPerSecond: number;
  /** Latency of the answered requests by kind: acknowledged (2xx), and shed (503 with Retry-After). */
  answeredMs: { ok: Percentiles; shed: Percentiles };
  ops: Partial<Record<OpName, OpStats>>;
  /** `shed`: 503 with Retry-After (the service refused before deciding: WRITER_MAX_QUEUE); not an error. */
  outcomes: { created: number; ok: number; insufficient: number; shed: number; other: number };
  /** A few bodies of "other" outcomes, to say what went wrong. */
  otherSamples: string[];
  connectionErrors: number;
  timeouts: number;
  ackedReservations: number;
  acked: Record<string, Acked>;
  /** Seconds into the run of the first insufficient_stock answer (the flash SKU sold out), or null. */
  soldOutAtSeconds: number | null;
  /**
   * The sale: the run until the flash SKU sold out (the whole run if it never did). After a sell-out,
   * reservations answer 409 from Redis alone, so the rest of the run measures something cheaper.
   */
  sale: { seconds: number; responses: number; throughput: number; latencyMs: Percentiles; writes: number };
  generatorCpuPercent: number;
  /** autocannon's own figures (its latency histogram counts 2xx only). */
  autocannon: { requests: number; p50: number; p99: number; max: number; errors: number; timeouts: number; non2xx: number };
  timeline?: TimelinePoint[];
}

/**
 * load generator → orchestrator: `sold-out` the moment the flash SKU sold out (the orchestrator reads the processes'
 * counters then, to cost the sale alone), then its result.
 */
export type LoadMessage = { type: 'sold-out' } | { type: 'result'; result: LoadResult };

/** service under test → orchestrator */
export type ServerMessage =
  | { type: 'ready'; port: number; pid: number; databaseUrl: string; redisPrefix: string }
  | { type: 'drained' }
  /** Bytes the service's JavaScript heap allocated since `count-allocations` (null: V8 could not say). */
  | { type: 'allocated'; bytes: number | null };
/** orchestrator → service under test */
export type ServerCommand = { type: 'drain' } | { type: 'close' } | { type: 'count-allocations' } | { type: 'allocated' };
