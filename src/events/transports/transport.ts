import type { CloudEvent } from '../envelope.js';

/** What became of a batch handed to a transport. */
export interface Delivery {
  /** `delivered[i]`: `events[i]` was accepted (acknowledged by the broker, answered 2xx by the endpoint). */
  delivered: boolean[];
  /** Sends that failed (an event held back behind its subject's failed one is not counted). */
  failed: number;
  /** The first failure, for the log. */
  error?: unknown;
}

/**
 * One destination of the events (src/events/relay.ts drives it). The relay hands it batches in position order and
 * records what it says was delivered; everything else is handed again later, under the same event ids.
 */
export interface Transport {
  /** Its relay's name: the cursor row (`event_cursors.transport`), the lease and the metrics label. */
  readonly name: string;
  /** Where it delivers, for log lines: never a secret. */
  readonly target: string;
  /** Connects and prepares (the NATS stream); called when its relay becomes the active one. */
  open(): Promise<void>;
  /**
   * Delivers `events` (position order) and says which were accepted. Per-subject order: an event is never
   * delivered after an earlier one of its subject in `events` failed. Does not throw: a failure is in the result.
   * `signal` aborts at shutdown (what is unsent counts as not delivered).
   */
  deliver(events: readonly CloudEvent[], signal: AbortSignal): Promise<Delivery>;
  /** Disconnects; `open` may be called again afterwards. */
  close(): Promise<void>;
}

/**
 * Sends `events` one at a time per subject, up to `concurrency` subjects at once, for transports that take one
 * event per request (NATS, webhooks). A subject whose send fails stops there: its later events are held back, so
 * they are never accepted before it (per-subject order; the relay hands them again after it). After a failure no
 * further subject is begun either (the destination is likely down: the retry comes after a backoff), while the
 * subjects already under way go on.
 */
export async function deliverBySubject(
  events: readonly CloudEvent[],
  send: (event: CloudEvent, signal: AbortSignal) => Promise<void>,
  concurrency: number,
  signal: AbortSignal,
): Promise<Delivery> {
  const delivered = events.map(() => false);
  const bySubject = new Map<string, number[]>();
  events.forEach((e, i) => {
    const chain = bySubject.get(e.subject);
    if (chain) chain.push(i);
    else bySubject.set(e.subject, [i]);
  });
  const chains = [...bySubject.values()];
  let failed = 0;
  let error: unknown;
  const worker = async (): Promise<void> => {
    for (let chain = chains.shift(); chain && failed === 0 && !signal.aborted; chain = chains.shift()) {
      for (const i of chain) {
        if (signal.aborted) return;
        try {
          await send(events[i]!, signal);
          delivered[i] = true;
        } catch (err) {
          failed++;
          error ??= err;
          break;
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, chains.length) }, worker));
  return { delivered, failed, error };
}
