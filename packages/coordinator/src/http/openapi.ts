/**
 * Builds the OpenAPI 3.1 document from the route schemas as Fastify registers them, so the
 * published API description can never drift from what the server validates.
 */
import type { FastifySchema, RouteOptions } from 'fastify';

interface Collected {
  method: string;
  url: string;
  schema: FastifySchema | undefined;
  summary: string | undefined;
}

/** Collects routes through Fastify's onRoute hook. */
export class OpenApiCollector {
  readonly #routes: Collected[] = [];

  onRoute = (route: RouteOptions): void => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    for (const m of methods) {
      if (m === 'HEAD') continue;
      const cfg = route.config as { summary?: string; hidden?: boolean } | undefined;
      if (cfg?.hidden === true) continue;
      this.#routes.push({
        method: m.toLowerCase(),
        url: route.url,
        schema: route.schema,
        summary: cfg?.summary,
      });
    }
  };

  document(version: string): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const r of this.#routes) {
      const path = r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
      const s = (r.schema ?? {}) as Record<string, unknown>;
      const op: Record<string, unknown> = {
        ...(r.summary === undefined ? {} : { summary: r.summary }),
        responses: {},
      };
      const params = s.params as { properties?: Record<string, unknown> } | undefined;
      if (params?.properties !== undefined) {
        op.parameters = Object.entries(params.properties).map(([name, schema]) => ({
          name,
          in: 'path',
          required: true,
          schema,
        }));
      }
      if (s.body !== undefined) {
        op.requestBody = { required: true, content: { 'application/json': { schema: s.body } } };
      }
      const responses = op.responses as Record<string, unknown>;
      const resp = (s.response ?? {}) as Record<string, unknown>;
      for (const [status, schema] of Object.entries(resp)) {
        responses[status] = { description: status, content: { 'application/json': { schema } } };
      }
      responses.default = {
        description: 'RFC 9457 problem details',
        content: {
          'application/problem+json': { schema: { $ref: '#/components/schemas/Problem' } },
        },
      };
      (paths[path] ??= {})[r.method] = op;
    }
    return {
      openapi: '3.1.0',
      info: { title: 'Cloister coordinator API', version },
      paths,
      components: {
        schemas: {
          Problem: {
            type: 'object',
            required: ['type', 'title', 'status', 'code'],
            properties: {
              type: { type: 'string' },
              title: { type: 'string' },
              status: { type: 'integer' },
              code: { type: 'string' },
              detail: { type: 'string' },
              layer: { type: 'string' },
              details: { type: 'object' },
            },
          },
        },
      },
    };
  }
}
