import closeWithGrace from 'close-with-grace';
import { pino } from 'pino';
import { buildApp } from './app.js';
import { addressOf, loadConfig } from './config.js';
import { logOptions } from './log.js';
import { ensureDatabase, migrate } from './store/database.js';

let config;
try {
  config = loadConfig();
} catch (err) {
  // loadConfig's messages name the variable and mask every secret.
  console.error(`Invalid configuration: ${(err as Error).message}`);
  process.exit(1);
}
const log = pino(logOptions(config.LOG_LEVEL));

const postgres = addressOf(config.DATABASE_URL);
try {
  await ensureDatabase(config.DATABASE_URL);
  await migrate(config.DATABASE_URL, log);
} catch (err) {
  log.fatal({ err, postgres }, `cannot prepare the PostgreSQL database at ${postgres} (is DATABASE_URL right and the server up?)`);
  process.exit(1);
}

try {
  const app = await buildApp(config);
  closeWithGrace({ delay: config.SHUTDOWN_GRACE_MS }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down: finishing in-flight requests');
    await app.close();
  });
  await app.listen({ host: config.HOST, port: config.PORT });
} catch (err) {
  // Through the logger, not Node's default report of an uncaught error, which prints every property as is.
  log.fatal({ err }, 'cannot start');
  process.exit(1);
}
