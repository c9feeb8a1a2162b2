import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { expect } from 'vitest';
import type { CloudEvent } from '../../src/events/envelope.js';
import { orderViolations } from './support.js';

/** A message of a JetStream stream, as the relay published it. */
export interface Stored {
  subject: string;
  msgId: string | undefined;
  contentType: string | undefined;
  event: CloudEvent;
}

/** Every message of `stream` from sequence `from` on, in stream order, over a connection of its own. */
export async function readStream(url: string, stream: string, from = 1): Promise<Stored[]> {
  const nc = await connect({ servers: url });
  try {
    const jsm = await jetstreamManager(nc);
    const { state } = await jsm.streams.info(stream);
    const out: Stored[] = [];
    for (let seq = Math.max(from, state.first_seq); seq <= state.last_seq; seq++) {
      const m = await jsm.streams.getMessage(stream, { seq });
      if (!m) continue;
      out.push({ subject: m.subject, msgId: m.header.get('Nats-Msg-Id'), contentType: m.header.get('Content-Type'), event: m.json<CloudEvent>() });
    }
    return out;
  } finally {
    await nc.close();
  }
}

/** How many messages `stream` holds. */
export async function streamCount(url: string, stream: string): Promise<number> {
  const nc = await connect({ servers: url });
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages;
  } finally {
    await nc.close();
  }
}

/** Checks that the stream holds each appended event exactly once, in per-subject order, as published. */
export function expectEveryEventOnce(stored: readonly Stored[], appended: readonly { id: string; type: string }[]): void {
  expect(stored.map((s) => s.msgId)).toEqual(stored.map((s) => s.event.id));
  expect(stored.map((s) => s.event.id).sort()).toEqual(appended.map((e) => e.id).sort()); // none lost, none twice
  expect(orderViolations(stored.map((s) => s.event))).toEqual([]);
  for (const s of stored) expect(s.subject).toBe(s.event.type);
}

