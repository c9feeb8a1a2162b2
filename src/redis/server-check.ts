import type { Redis } from 'ioredis';
import type { Keys } from './keys.js';
import { scriptSource, type ScriptReply } from './scripts.js';

/**
 * What server_check.lua found: the state's own server, no state, state adopted from before servers were recorded,
 * dropped, or unknown (the Redis user may not run INFO: a server's change cannot be told then).
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

/**
 * A single Redis' state is trusted only on the server it was rebuilt on (server_check.lua says why), and a restart or
 * a failover always means a new connection: so each connection is checked as it opens, and no script is sent on one
 * before its check has answered (`ready`). A gate rather than ordering: ioredis marks a connection ready inside a
 * promise callback, and requests' continuations queued behind it send their scripts before any 'ready' listener runs.
 */
export class ServerCheck {
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
