import { describe, expect, it } from 'vitest';
import { startTestApp } from '../helpers/app.js';

describe('the app closes what its plugins opened, in order', () => {
  it('stops the jobs, then drains the writer, then ends the PostgreSQL pool and the Redis client', async () => {
    const t = await startTestApp();
    const { sweeper, reconciler, writer, db, redis } = t.app.runtime;
    const calls: string[] = [];
    /** Records each call of `object[method]` by `name`, then makes it as before. */
    const watch = <T extends object>(name: string, object: T, method: keyof T & string) => {
      const original = (object[method] as (...args: unknown[]) => unknown).bind(object);
      Object.assign(object, { [method]: (...args: unknown[]) => (calls.push(name), original(...args)) });
    };
    watch('sweeper.stop', sweeper, 'stop');
    watch('reconciler.stop', reconciler, 'stop');
    watch('writer.close', writer, 'close');
    watch('db.end', db, 'end');
    watch('redis.quit', redis, 'quit');

    await t.close();

    expect([...calls].sort()).toEqual(['db.end', 'reconciler.stop', 'redis.quit', 'sweeper.stop', 'writer.close']);
    const at = (name: string) => calls.indexOf(name);
    expect(Math.max(at('sweeper.stop'), at('reconciler.stop'))).toBeLessThan(at('writer.close'));
    expect(at('writer.close')).toBeLessThan(Math.min(at('db.end'), at('redis.quit')));
    expect(redis.status).toBe('end');
  });
});
