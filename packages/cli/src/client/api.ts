/**
 * Typed calls of the coordinator API (DESIGN §3; routes and bodies in @cloister/protocol api.ts).
 * Every answer is checked against the protocol schema of the fields this client uses before
 * anything reads it (extra fields a newer coordinator adds are ignored, never trusted).
 */
import {
  AttestResponseSchema,
  ImageKeyResponseSchema,
  HistoryResponseSchema,
  ManifestResponseSchema,
  SetManifestResponseSchema,
  SetSecretResponseSchema,
  checkBody,
  nonceToBase64Url,
} from '@cloister/protocol';
import type {
  AttestResponse,
  HistoryResponse,
  ImageKeyResponse,
  ManifestResponse,
  Nonce,
  SetManifestRequest,
  SetManifestResponse,
  SetSecretRequest,
  SetSecretResponse,
} from '@cloister/protocol';
import type { TSchema, Static } from '@sinclair/typebox';
import { clientError } from './error-codes.js';
import { CoordinatorTransport } from './http.js';
import type { TransportOptions } from './http.js';

/** Keeps only the properties a closed schema declares, then validates against it. */
function checkPicked<T extends TSchema>(schema: T, body: unknown, what: string): Static<T> {
  const props = (schema as unknown as { properties?: Record<string, unknown> }).properties;
  const picked =
    props !== undefined && typeof body === 'object' && body !== null && !Array.isArray(body)
      ? Object.fromEntries(
          Object.keys(props)
            .filter((k) => Object.hasOwn(body, k))
            .map((k) => [k, (body as Record<string, unknown>)[k]]),
        )
      : body;
  try {
    return checkBody(schema, picked, what);
  } catch (cause) {
    throw clientError('CLIENT_BAD_RESPONSE', `${what} violates the API schema`, {
      cause,
      details: (cause as { details?: Record<string, unknown> }).details ?? {},
    });
  }
}

/** Coordinator status as served (fields vary by state; printed as given). */
export type StatusAnswer = Record<string, unknown>;

/** The coordinator API over one transport. */
export class CoordinatorApi {
  readonly transport: CoordinatorTransport;

  constructor(options: TransportOptions) {
    this.transport = new CoordinatorTransport(options);
  }

  close(): Promise<void> {
    return this.transport.close();
  }

  async attest(nonce: Nonce): Promise<AttestResponse> {
    const body = await this.transport.json('POST', '/v1/attest', {
      nonce: nonceToBase64Url(nonce),
    });
    return checkPicked(AttestResponseSchema, body, 'POST /v1/attest answer');
  }

  /** The public key image layer keys are wrapped to (authentic through the pinned root). */
  async imageKey(): Promise<ImageKeyResponse> {
    const body = await this.transport.json('GET', '/v1/image-key');
    return checkPicked(ImageKeyResponseSchema, body, 'GET /v1/image-key answer');
  }

  async getManifest(): Promise<ManifestResponse> {
    const body = await this.transport.json('GET', '/v1/manifest');
    return checkPicked(ManifestResponseSchema, body, 'GET /v1/manifest answer');
  }

  async history(): Promise<HistoryResponse> {
    const body = await this.transport.json('GET', '/v1/manifest/history');
    return checkPicked(HistoryResponseSchema, body, 'GET /v1/manifest/history answer');
  }

  async setManifest(req: SetManifestRequest): Promise<SetManifestResponse> {
    const body = await this.transport.json('PUT', '/v1/manifest', req);
    return checkPicked(SetManifestResponseSchema, body, 'PUT /v1/manifest answer');
  }

  async setSecret(name: string, req: SetSecretRequest): Promise<SetSecretResponse> {
    const body = await this.transport.json('PUT', `/v1/secrets/${encodeURIComponent(name)}`, req);
    return checkPicked(SetSecretResponseSchema, body, 'PUT /v1/secrets answer');
  }

  async status(): Promise<StatusAnswer> {
    const body = await this.transport.json('GET', '/v1/status');
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw clientError('CLIENT_BAD_RESPONSE', 'GET /v1/status answer is not an object');
    }
    return body as StatusAnswer;
  }
}
