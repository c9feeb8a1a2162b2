import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CloudEvent } from '../../src/events/envelope.js';

/** A webhook endpoint the events tests run: records each request (headers, body) and answers as the test says. */

const receivers: Receiver[] = [];

/** Closes every receiver this file opened (hanging requests first). */
export async function closeReceivers(): Promise<void> {
  await Promise.all(receivers.splice(0).map((r) => r.close()));
}

export interface Received {
  headers: http.IncomingHttpHeaders;
  body: string;
  status: number | 'hung';
}

/** How the receiver answers a request: a status, or 'hang' (never answers). */
export type Answer = number | 'hang';

export interface Receiver {
  url: string;
  requests: Received[];
  /** The events of the requests answered 2xx, in the order they were accepted. */
  accepted(): CloudEvent[];
  answer: (request: number, received: Received) => Answer | Promise<Answer>;
  close(): Promise<void>;
}

/** An HTTP server on a free loopback port recording every request; `answer` decides each answer. */
export async function receiver(answer: Receiver['answer'] = () => 200): Promise<Receiver> {
  const requests: Received[] = [];
  const hung = new Set<http.ServerResponse>();
  const r: Receiver = {
    url: '',
    requests,
    answer,
    accepted: () => requests.filter((q) => typeof q.status === 'number' && q.status < 300).map((q) => JSON.parse(q.body) as CloudEvent),
    close: async () => {
      for (const res of hung) res.destroy();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      // Recorded as it arrives (a subject's next event is only sent once this one was answered), 'hung' until answered.
      const received: Received = { headers: req.headers, body, status: 'hung' };
      requests.push(received);
      void Promise.resolve(r.answer(requests.length - 1, received)).then((status) => {
        if (status === 'hang') {
          hung.add(res);
          return;
        }
        received.status = status;
        res.writeHead(status).end();
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  r.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/inventory`;
  receivers.push(r);
  return r;
}

