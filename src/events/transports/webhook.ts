import { Webhook } from 'standardwebhooks';
import type { CloudEvent } from '../envelope.js';
import type { WebhookSettings } from '../settings.js';
import { deliverBySubject, type Delivery, type Transport } from './transport.js';

export interface WebhookOptions {
  /** How long one POST may take, answer included, before it counts as failed. */
  timeoutMs: number;
  /** Requests in flight at once to this endpoint (each subject's events one after another). */
  concurrency: number;
}

export const WEBHOOK_DEFAULTS: WebhookOptions = { timeoutMs: 10_000, concurrency: 8 };

/** A failed POST, said without the URL (it may be a capability): the endpoint's origin only. */
export class WebhookError extends Error {
  override name = 'WebhookError';
}

/**
 * One webhook endpoint: each event `POST`ed as its CloudEvent JSON, signed the Standard Webhooks way
 * (`webhook-id` = the event id, so a redelivery carries the same id; `webhook-timestamp`, seconds, of this
 * attempt; `webhook-signature` = `v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the secret). A 2xx answer
 * is a delivery; anything else (another status, a redirect, no answer within the timeout) a failure to retry.
 * User information in the URL is sent as Basic authorization (fetch refuses URLs that carry it).
 */
export class WebhookTransport implements Transport {
  readonly name: string;
  private readonly signer: Webhook;
  private readonly url: string;
  private readonly authorization: string | undefined;

  constructor(
    private readonly settings: WebhookSettings,
    secret: string,
    private readonly options: WebhookOptions = WEBHOOK_DEFAULTS,
  ) {
    this.name = settings.name;
    this.signer = new Webhook(secret);
    const url = new URL(settings.url);
    if (url.username !== '' || url.password !== '') {
      const credentials = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
      this.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
      url.username = '';
      url.password = '';
    }
    this.url = url.toString();
  }

  get target(): string {
    return `webhook ${this.settings.origin}`;
  }

  async open(): Promise<void> {}

  deliver(events: readonly CloudEvent[], signal: AbortSignal): Promise<Delivery> {
    return deliverBySubject(events, (event, s) => this.post(event, s), this.options.concurrency, signal);
  }

  async close(): Promise<void> {}

  private async post(event: CloudEvent, signal: AbortSignal): Promise<void> {
    const body = JSON.stringify(event);
    const now = new Date();
    let response: Response;
    try {
      response = await fetch(this.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'webhook-id': event.id,
          'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
          'webhook-signature': this.signer.sign(event.id, now, body),
          ...(this.authorization ? { authorization: this.authorization } : {}),
        },
        body,
        redirect: 'manual',
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.options.timeoutMs)]),
      });
      // Read to the end, so the connection is kept for the next request.
      await response.arrayBuffer();
    } catch (err) {
      throw new WebhookError(`POST to ${this.settings.origin} failed: ${reason(err)}`);
    }
    if (response.status < 200 || response.status > 299) {
      throw new WebhookError(`POST to ${this.settings.origin} answered ${response.status}`);
    }
  }
}

/** Why a fetch failed, without what it quotes of the request: the cause's code (ECONNREFUSED …) or the error's name. */
function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return err.name === 'TimeoutError' ? 'timed out' : 'aborted';
  const cause = err.cause as { code?: string } | undefined;
  return cause?.code ?? err.name;
}
