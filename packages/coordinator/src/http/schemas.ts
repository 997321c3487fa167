/**
 * Route schemas of the coordinator API. The request and response bodies are the protocol
 * package's (`ROUTES`), shared with the agent and the CLI, so client and server can never
 * disagree; only the path parameters are declared here. Every object is closed: an unknown
 * field is a 400, never silently ignored.
 */
import { Type } from '@sinclair/typebox';
import type { Static } from '@sinclair/typebox';
import { InstanceIdPattern, NAME_PATTERN } from '@cloister/protocol';
import type { ActivateRequest, SetManifestRequest, SetSecretRequest } from '@cloister/protocol';

export const SecretParams = Type.Object(
  { name: Type.String({ pattern: NAME_PATTERN }) },
  { additionalProperties: false },
);
export type SecretParamsT = Static<typeof SecretParams>;

export const InstanceParams = Type.Object(
  { id: Type.String({ pattern: InstanceIdPattern }) },
  { additionalProperties: false },
);

export const HealthResponse = Type.Object({ ok: Type.Boolean() }, { additionalProperties: false });

export type ActivateBody = ActivateRequest;
export type SetManifestBody = SetManifestRequest;
export type PutSecretBody = SetSecretRequest;
