/**
 * Clean-ups a bench tool runs when it is cut short: Ctrl-C, SIGTERM, or its output pipe closing (`npm run
 * bench:outbox-wal | head`: the next write fails with EPIPE, which would end the process past its `finally`). Without
 * them a scratch database is left behind (one was 244 MB). A second Ctrl-C ends the tool at once.
 */
const cleanups = new Set<() => Promise<void>>();
let installed = false;
let stopping = false;

/** Runs `cleanup` if the tool is cut short; the returned function unregisters it (once it ran the normal way). */
export function onInterrupt(cleanup: () => Promise<void>): () => void {
  if (!installed) install();
  cleanups.add(cleanup);
  return () => void cleanups.delete(cleanup);
}

function install(): void {
  installed = true;
  const stop = (code: number) => {
    if (stopping) return;
    stopping = true;
    // The tool's own sessions on a database being dropped end with errors (57P01) nobody listens for: it is ending.
    process.on('uncaughtException', () => {});
    void Promise.allSettled([...cleanups].map((cleanup) => cleanup())).finally(() => process.exit(code));
  };
  process.once('SIGINT', () => stop(130));
  process.once('SIGTERM', () => stop(143));
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    stop(0);
  });
}
