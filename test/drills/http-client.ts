import http from 'node:http';

/** An HTTP answer as the drill clients see it; `body` is parsed JSON (or the raw text if it was not JSON). */
export interface HttpAnswer {
  status: number;
  body: unknown;
  headers: http.IncomingHttpHeaders;
}

/** The request never got an HTTP answer: refused, reset, timed out. Its effect on the server is unknown. */
export class NetworkError extends Error {
  constructor(readonly reason: string) {
    super(`network error: ${reason}`);
    this.name = 'NetworkError';
  }
}

/**
 * Keep-alive HTTP/1.1 to the API nodes, one agent per node, like a service's HTTP client pool. Every request has a
 * deadline, so a node that stops answering (blackholed dependency, killed process) never hangs a drill client.
 */
export class HttpClient {
  private readonly agents = new Map<string, http.Agent>();

  constructor(private readonly timeoutMs: number) {}

  request(base: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<HttpAnswer> {
    const url = new URL(path, base);
    if (url.hostname !== '127.0.0.1' && url.hostname !== 'localhost') throw new Error(`drills only talk to loopback, not ${url.host}`);
    let agent = this.agents.get(url.host);
    if (!agent) {
      agent = new http.Agent({ keepAlive: true, maxSockets: Infinity, keepAliveMsecs: 1000 });
      this.agents.set(url.host, agent);
    }
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise<HttpAnswer>((resolve, reject) => {
      const req = http.request(
        {
          agent,
          host: url.hostname,
          port: url.port,
          method,
          path: url.pathname + url.search,
          headers: {
            ...headers,
            ...(payload ? { 'content-type': 'application/json', 'content-length': String(payload.length) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('error', (err) => reject(new NetworkError(err.message)));
          res.on('end', () => {
            clearTimeout(timer);
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown = text;
            try {
              parsed = text === '' ? undefined : JSON.parse(text);
            } catch {
              // not JSON: keep the text
            }
            resolve({ status: res.statusCode ?? 0, body: parsed, headers: res.headers });
          });
        },
      );
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)), this.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new NetworkError(err.code ?? err.message));
      });
      req.end(payload);
    });
  }

  close(): void {
    for (const agent of this.agents.values()) agent.destroy();
    this.agents.clear();
  }
}
