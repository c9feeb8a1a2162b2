import net from 'node:net';

export interface TcpProxy {
  /** Local port clients should connect to (127.0.0.1). */
  readonly port: number;
  /** Destroy all current connections and refuse (accept then immediately destroy) new ones until restore(). */
  cut(): void;
  /**
   * Network partition: keep accepting, but silently drop every byte (and FIN) in both directions.
   * Nothing is buffered, so bytes sent meanwhile are lost for good; peers just hang until they time out.
   */
  blackhole(): void;
  /**
   * Requests still reach the server, its answers are dropped: a commit whose answer never arrives. New
   * connections hang in their handshake, so the client cannot ask either.
   */
  loseReplies(): void;
  /** Forward traffic normally again (existing blackholed connections resume; their lost bytes stay lost). */
  restore(): void;
  /** Another server behind the same address (a failover behind a stable endpoint): connections are cut, new ones go to `port`. */
  redirect(port: number): void;
  /** Destroy all connections and stop listening. */
  close(): Promise<void>;
}

type Mode = 'open' | 'cut' | 'blackhole' | 'replies-lost';

export async function startTcpProxy(port: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  let targetPort = port;
  let mode: Mode = 'open';
  const sockets = new Set<net.Socket>();

  const track = (socket: net.Socket): void => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };

  // Manual forwarding instead of pipe() so blackhole() can drop bytes mid-stream.
  const forward = (from: net.Socket, to: net.Socket, direction: 'request' | 'reply'): void => {
    from.on('data', (chunk: Buffer) => {
      if (mode === 'blackhole' || (mode === 'replies-lost' && direction === 'reply')) return;
      if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => from.resume());
      }
    });
    // allowHalfOpen on both sides: propagate FIN explicitly so in-flight replies aren't truncated.
    from.on('end', () => {
      if (mode !== 'blackhole') to.end();
    });
    // An abrupt failure on one side (RST, cut) is mirrored as an abrupt close on the other.
    from.on('close', (hadError) => {
      if (hadError) to.destroy();
    });
    from.on('error', () => to.destroy());
  };

  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    if (mode === 'cut') {
      client.destroy();
      return;
    }
    const upstream = net.connect({ port: targetPort, host: targetHost, allowHalfOpen: true });
    track(client);
    track(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    forward(client, upstream, 'request');
    forward(upstream, client, 'reply');
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('startTcpProxy: unexpected server address');

  const destroyAll = (): void => {
    for (const socket of sockets) socket.destroy();
  };

  return {
    port: address.port,
    cut: () => {
      mode = 'cut';
      destroyAll();
    },
    blackhole: () => {
      mode = 'blackhole';
    },
    loseReplies: () => {
      mode = 'replies-lost';
    },
    restore: () => {
      mode = 'open';
    },
    redirect: (port) => {
      targetPort = port;
      destroyAll();
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        destroyAll();
        server.close((err) => (err ? reject(err) : resolve()));
      }),
  };
}
