import net from 'node:net';

/** Ask the kernel for an unused 127.0.0.1 port. Racy by nature (another process may grab it), fine for tests. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        server.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      server.close(() => resolve(address.port));
    });
  });
}

const exitCleanups: Array<() => void> = [];

/**
 * Run `cleanup` (synchronously) when the test process ends. Besides 'exit', this covers SIGTERM/SIGINT/SIGHUP:
 * Vitest stops fork workers with SIGTERM, which skips 'exit' handlers, and we must not leak servers.
 */
export function onProcessExit(cleanup: () => void): void {
  exitCleanups.push(cleanup);
  if (exitCleanups.length > 1) return;
  const runAll = (): void => {
    for (const fn of exitCleanups) {
      try {
        fn();
      } catch {
        // Best effort: never let cleanup mask the real exit reason.
      }
    }
  };
  process.on('exit', runAll);
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(signal, () => {
      runAll();
      // A listener disables the default "terminate" action: re-raise unless someone else handles the signal.
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
    });
  }
}
