/**
 * The coordinator's HTTP API (Fastify 5, TypeBox route schemas). Every route validates its body
 * against a closed schema, every error leaves as RFC 9457 problem+json with our code, and bad
 * input never reaches a 500. The routes are thin: all logic is in `CoordinatorService`.
 */
import { constants } from 'node:crypto';
import Fastify, { LogController } from 'fastify';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { coordinatorError } from '../error-codes.js';
import type { CoordinatorMetrics } from '../metrics.js';
import type { CoordinatorService } from '../service.js';
import { OpenApiCollector } from './openapi.js';
import { PROBLEM_CONTENT_TYPE, problemFor } from './problem.js';
import { ROUTES } from '@cloister/protocol';
import { HealthResponse, InstanceParams, SecretParams } from './schemas.js';

/** The default body limit: 1 MiB (a manifest with many literal files stays below it). */
export const DEFAULT_BODY_LIMIT = 1_048_576;

/** How long a client may take to send one whole request (1 MiB needs about 17 KB/s). */
export const REQUEST_TIMEOUT_MS = 60_000;

/**
 * TLS 1.3 and, for older clients, only the TLS 1.2 suites with ECDHE and an AEAD (the
 * coordinator's key is ECDSA P-256). Node's default list also accepts the CBC suites with
 * HMAC-SHA1 (MAC-then-encrypt, the Lucky 13 family of padding-oracle attacks) on TLS 1.2.
 */
const TLS_CIPHERS = [
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'TLS_AES_128_GCM_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
].join(':');

export interface ServerOptions {
  readonly https?: { key: string; cert: string };
  readonly logger: FastifyBaseLogger;
  readonly bodyLimit?: number;
  readonly metrics: CoordinatorMetrics;
  readonly version?: string;
}

/** Builds (but does not start) the Fastify instance of a coordinator. */
export async function buildServer(
  svc: CoordinatorService,
  opts: ServerOptions,
): Promise<FastifyInstance> {
  const base = {
    loggerInstance: opts.logger,
    bodyLimit: opts.bodyLimit ?? DEFAULT_BODY_LIMIT,
    // Per-request access logs would put every client's address and path in the log; the
    // coordinator logs what it decides instead (activations, transitions, refusals).
    logController: new LogController({ disableRequestLogging: true }),
    // Strict validation: no type coercion, no silent removal of unknown fields, no defaults.
    ajv: {
      customOptions: {
        coerceTypes: false,
        removeAdditional: false,
        useDefaults: false,
        allErrors: false,
      },
    },
    // Prototype poisoning in JSON bodies is an error, not something to strip.
    onProtoPoisoning: 'error' as const,
    onConstructorPoisoning: 'error' as const,
    return503OnClosing: true,
    // A whole request (headers and body) must arrive within a minute. Fastify's default is no
    // limit, so a client that sent headers and then trickled its body (or nothing) held a
    // connection and its buffers for ever: a slowloris on an unauthenticated port that, with
    // enough connections, locks the agents out. Node already bounds the headers (60 s).
    requestTimeout: REQUEST_TIMEOUT_MS,
  };
  const app = (opts.https === undefined
    ? Fastify(base)
    : Fastify({
        ...base,
        https: {
          key: opts.https.key,
          cert: opts.https.cert,
          // No session tickets: agents and clients use a connection and close it, and a renewal
          // comes hours after a ticket's 5-minute lifetime, so every ticket was wasted work
          // (about 10 % of the server's CPU per full handshake, measured with openssl s_time).
          // It also leaves no ticket key in memory that could open recorded resumed sessions.
          secureOptions: constants.SSL_OP_NO_TICKET,
          minVersion: 'TLSv1.2' as const,
          ciphers: TLS_CIPHERS,
        },
      })) as unknown as FastifyInstance;
  const typed = app.withTypeProvider<TypeBoxTypeProvider>();
  // Responses are serialised with JSON.stringify: the schemas document them (OpenAPI, and the
  // tests validate every response against them) but must never silently drop a field.
  typed.setSerializerCompiler(() => (data) => JSON.stringify(data));
  const openapi = new OpenApiCollector();
  typed.addHook('onRoute', openapi.onRoute);

  typed.setErrorHandler((err, req, reply) => {
    const p = problemFor(err);
    if (p.status >= 500) req.log.error({ err }, 'request failed');
    else req.log.debug({ code: p.code }, 'request refused');
    void reply.code(p.status).type(PROBLEM_CONTENT_TYPE).send(p);
  });
  typed.setNotFoundHandler((req, reply) => {
    const p = problemFor(
      coordinatorError(
        'COORDINATOR_NOT_FOUND',
        `no route ${req.method} ${req.url.split('?')[0] ?? ''}`,
      ),
    );
    void reply.code(p.status).type(PROBLEM_CONTENT_TYPE).send(p);
  });
  typed.addHook('onResponse', (req, reply, done) => {
    opts.metrics.httpRequests.inc({
      method: req.method,
      route: req.routeOptions.url ?? 'unmatched',
      status: String(reply.statusCode),
    });
    done();
  });

  typed.post(
    '/v1/activate/challenge',
    {
      config: { summary: 'Get a one-time activation nonce (short TTL).' },
      schema: { response: { 200: ROUTES.activateChallenge.response } },
    },
    () => {
      const n = svc.challenge();
      return { nonce: n.nonce, expiresAt: n.expiresAt.toISOString() };
    },
  );

  typed.post(
    '/v1/activate',
    {
      config: { summary: 'Activate a workload instance with TEE evidence; returns a JWE bundle.' },
      schema: { body: ROUTES.activate.body, response: { 200: ROUTES.activate.response } },
    },
    async (req) => svc.activate(req.body),
  );

  typed.post(
    '/v1/attest',
    {
      config: {
        summary:
          "The coordinator's own evidence, bound to the nonce, root CA, history head and TLS key.",
      },
      schema: { body: ROUTES.attest.body, response: { 200: ROUTES.attest.response } },
    },
    async (req) => svc.attest(req.body.nonce),
  );

  typed.get(
    '/v1/manifest',
    {
      config: { summary: 'The current manifest and its canonical hash.' },
      schema: { response: { 200: ROUTES.getManifest.response } },
    },
    () => svc.getManifest(),
  );

  typed.put(
    '/v1/manifest',
    {
      config: { summary: 'Set or update the manifest (owner-signed transition).' },
      schema: { body: ROUTES.setManifest.body, response: { 200: ROUTES.setManifest.response } },
    },
    async (req) => svc.setManifest(req.body),
  );

  typed.get(
    '/v1/manifest/history',
    {
      config: { summary: 'Every accepted manifest transition, oldest first (a hash chain).' },
      schema: { response: { 200: ROUTES.history.response } },
    },
    () => svc.history(),
  );

  typed.put(
    '/v1/secrets/:name',
    {
      config: {
        summary: 'Upload a user-defined secret (signed by an owner with role secrets:<name>).',
      },
      schema: {
        params: SecretParams,
        body: ROUTES.setSecret.body,
        response: { 200: ROUTES.setSecret.response },
      },
    },
    async (req) => svc.putSecret(req.params.name, req.body),
  );

  typed.get(
    '/v1/status',
    {
      config: { summary: 'State, manifest hash, history head and live instances.' },
      schema: { response: { 200: ROUTES.status.response } },
    },
    () => svc.status(),
  );

  typed.get(
    '/v1/image-key',
    {
      config: {
        summary:
          'The public key image layer keys are wrapped to (fetch it over TLS pinned to the verified root).',
      },
      schema: { response: { 200: ROUTES.imageKey.response } },
    },
    () => svc.imageKey(),
  );

  typed.delete(
    '/v1/instances/:id',
    {
      config: {
        summary: "Release an instance (signed by the instance's mesh key over a fresh nonce).",
      },
      schema: {
        params: InstanceParams,
        body: ROUTES.releaseInstance.body,
        response: { 200: ROUTES.releaseInstance.response },
      },
    },
    async (req) => svc.releaseInstance(req.params.id, req.body),
  );

  typed.get(
    '/healthz',
    { config: { summary: 'Liveness.' }, schema: { response: { 200: HealthResponse } } },
    () => ({ ok: true }),
  );

  typed.get(
    '/readyz',
    { config: { summary: 'Ready to activate workloads (a manifest is set).' } },
    (_req, reply) => {
      if (!svc.ready()) {
        const p = problemFor(coordinatorError('COORDINATOR_NOT_READY', 'no manifest set yet'));
        void reply.code(p.status).type(PROBLEM_CONTENT_TYPE).send(p);
        return reply;
      }
      return { ok: true };
    },
  );

  typed.get('/metrics', { config: { summary: 'Prometheus metrics.' } }, async (_req, reply) => {
    const text = await opts.metrics.registry.metrics();
    void reply.type(opts.metrics.registry.contentType).send(text);
    return reply;
  });

  typed.get(
    '/v1/openapi.json',
    { config: { summary: 'This API description (OpenAPI 3.1).' } },
    () => openapi.document(opts.version ?? '1'),
  );

  await typed.ready();
  return app;
}
