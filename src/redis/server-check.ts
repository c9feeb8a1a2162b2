import type { Cluster, Redis } from 'ioredis';
import { scanTargets, type RedisClient } from './client.js';
import type { Keys } from './keys.js';
import { scriptSource, type ScriptReply } from './scripts.js';
import { slotTagList } from './slots.js';

/**
 * What a check found (server_check.lua, cluster_server_check.lua): the state's own server, no state, state adopted
 * from before servers were recorded, dropped, or unknown (the Redis user may not run INFO: a change cannot be told).
 */
export type ServerVerdict = 'same' | 'none' | 'adopted' | 'dropped' | 'unknown';

/** The run_id of the server the connection is on now (every start of a Redis process draws a new one); '' if the user may not run INFO. */
export async function serverRunId(redis: Redis): Promise<string> {
  let info: string;
  try {
    info = await redis.info('server');
  } catch (err) {
    if (err instanceof Error && err.message.startsWith('NOPERM')) return '';
    throw err;
  }
  const runId = /^run_id:([0-9a-f]+)\r?$/m.exec(info)?.[1];
  if (!runId) throw new Error('INFO server has no run_id');
  return runId;
}

/** The run_id of each server the client writes to now (scanTargets: a single Redis, or a cluster's masters). */
export async function serverRunIds(redis: RedisClient): Promise<Map<Redis, string>> {
  return new Map(await Promise.all(scanTargets(redis).map(async (server) => [server, await serverRunId(server)] as const)));
}

/** What Decisions waits for before it sends a script: the connections it may go out on have been checked. */
export interface ConnectionCheck {
  /** Whether they have (no await on the hot path when so). */
  readonly passed: boolean;
  /** Resolves once they have; rejects if a check could not be made. */
  ready(): Promise<void>;
}

/**
 * A single Redis' state is trusted only on the server it was rebuilt on (server_check.lua says why), and a restart or
 * a failover always means a new connection: so each connection is checked as it opens, and no script is sent on one
 * before its check has answered (`ready`). A gate rather than ordering: ioredis marks a connection ready inside a
 * promise callback, and requests' continuations queued behind it send their scripts before any 'ready' listener runs.
 */
export class ServerCheck implements ConnectionCheck {
  /** The connection (ioredis' socket) whose check answered last. */
  private checked: unknown = null;
  private checking: Promise<void> | null = null;

  constructor(
    private readonly redis: Redis,
    private readonly keys: Keys,
    private readonly onVerdict: (verdict: ServerVerdict) => void,
    private readonly onError: (err: unknown) => void,
  ) {
    redis.on('ready', () => void this.check().catch(() => undefined));
  }

  /** Whether the connection commands go out on now has been checked (no await on the hot path when it has). */
  get passed(): boolean {
    return this.redis.stream === this.checked && this.redis.stream !== undefined;
  }

  /** Resolves once the current connection is checked; rejects if the check could not be made. */
  async ready(): Promise<void> {
    while (!this.passed) await this.check();
  }

  /** Checks the current connection (concurrent callers share one check). */
  check(): Promise<void> {
    this.checking ??= this.run().finally(() => {
      this.checking = null;
    });
    return this.checking;
  }

  private async run(): Promise<void> {
    const stream = this.redis.stream;
    try {
      // EVAL, not EVALSHA: a server that never saw the script would answer NOSCRIPT, a round trip for nothing.
      const reply = (await this.redis.eval(scriptSource('server_check'), 2, this.keys.marker, this.keys.server)) as ScriptReply;
      // Judged on the connection it was asked on: one made meanwhile is checked by its own 'ready'.
      if (this.redis.stream === stream) this.checked = stream;
      this.onVerdict(reply[1] as ServerVerdict);
    } catch (err) {
      this.onError(err);
      throw err;
    }
  }
}

/**
 * A cluster's state is trusted only on the processes its markers were written by (cluster_server_check.lua says
 * why). ioredis never reconnects a cluster node's connection: a lost one ends, and a new one is made for the next
 * command to that node, announced with '+node' as it is made, before anything is queued on it (its ConnectionPool).
 * So each new connection to a master has the check queued first, and the node runs it before any script sent on
 * that connection. A check can fail where the scripts behind it do not (a master just restarted refuses it until it
 * has rejoined the cluster, a moment later): so, as on a single Redis, Decisions sends no script while a check has
 * not answered (`passed`), and makes a failed one again first. The check declares `allow-oom`: out of memory, a
 * master would refuse it while reads behind it pass. Replicas' connections are not checked: they decide nothing, and a replica promoted
 * has another node id, which every script checks (includes/common.lua).
 */
export class ClusterServerCheck implements ConnectionCheck {
  /** Masters' connections whose check has not answered: in flight, or null when it failed. */
  private readonly unchecked = new Map<Redis, Promise<void> | null>();
  private tags: string | undefined;

  constructor(
    private readonly cluster: Cluster,
    private readonly keys: Keys,
    private readonly onVerdict: (verdict: ServerVerdict, node: string) => void,
    private readonly onError: (err: unknown, node: string) => void,
  ) {
    cluster.on('+node', (node: Redis) => void this.check(node).catch(() => undefined));
    cluster.on('-node', (node: Redis) => this.unchecked.delete(node));
  }

  get passed(): boolean {
    return this.unchecked.size === 0;
  }

  async ready(): Promise<void> {
    while (this.unchecked.size > 0) await Promise.all([...this.unchecked.keys()].map((node) => this.check(node)));
  }

  /** Checks the connections made before this check listened (at start). */
  async checkAll(): Promise<void> {
    await Promise.all(this.cluster.nodes('master').map((node) => this.check(node)));
  }

  /** Checks a master's connection: concurrent callers share a check in flight, and a failed one is made again. */
  private check(node: Redis): Promise<void> {
    if (node.options.readOnly) return Promise.resolve();
    let checking = this.unchecked.get(node);
    if (!checking) {
      checking = this.run(node);
      this.unchecked.set(node, checking);
    }
    return checking;
  }

  private async run(node: Redis): Promise<void> {
    const address = `${node.options.host}:${node.options.port}`;
    try {
      this.tags ??= slotTagList();
      // EVAL, not EVALSHA: a node that never saw the script would answer NOSCRIPT, and the scripts queued behind
      // the check would run before it was sent again.
      const reply = (await node.eval(scriptSource('cluster_server_check'), 0, ...this.keys.markerAroundTag, this.tags)) as ScriptReply;
      this.unchecked.delete(node);
      this.onVerdict(reply[1] as ServerVerdict, address);
    } catch (err) {
      // Made again by the next call (unless the connection ended meanwhile: then there is nothing to check).
      if (this.unchecked.has(node)) this.unchecked.set(node, null);
      this.onError(err, address);
      throw err;
    }
  }
}
