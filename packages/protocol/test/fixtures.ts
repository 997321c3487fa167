/* eslint-disable @typescript-eslint/no-explicit-any --
   These tests mutate untyped manifest JSON on purpose, to feed validation invalid input. */
// Test fixtures: a complete, valid manifest with real owner and recovery keys.
import { generateKeyPairSync } from 'node:crypto';

export function pemKey(type: 'P-256' | 'P-384' | 'Ed25519' | 'RSA' | 'P-521'): string {
  const kp =
    type === 'Ed25519'
      ? generateKeyPairSync('ed25519')
      : type === 'RSA'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: type });
  return kp.publicKey.export({ type: 'spki', format: 'pem' }).toString();
}

export const alice = generateKeyPairSync('ec', { namedCurve: 'P-256' });
export const bob = generateKeyPairSync('ed25519');
export const carol = generateKeyPairSync('ec', { namedCurve: 'P-384' });
export const pem = (k: {
  publicKey: { export(o: { type: 'spki'; format: 'pem' }): string | Buffer };
}) => k.publicKey.export({ type: 'spki', format: 'pem' }).toString();

/** A fresh deep copy of a valid manifest covering every section. */
export function sampleManifest(): Record<string, any> {
  return structuredClone({
    version: 1,
    trustDomain: 'shop.example',
    packages: {
      web: {
        tee: 'sev-snp',
        measurement: 'aa'.repeat(48),
        hostData: 'bb'.repeat(32),
        minTcb: { bootloader: 7, tee: 0, snp: 15, microcode: 72 },
        debug: false,
      },
      api: {
        tee: 'sgx',
        mrsigner: 'cc'.repeat(32),
        productId: 1,
        minSvn: 3,
        debug: false,
        acceptedTcbStatus: ['UpToDate', 'SWHardeningNeeded'],
      },
      td: { tee: 'tdx', mrtd: 'dd'.repeat(48), rtmrs: [null, 'ee'.repeat(48), null, null] },
      dev: { tee: 'sim', measurement: 'ff'.repeat(48), minSvn: 1 },
    },
    workloads: {
      frontend: {
        package: 'web',
        maxInstances: 10,
        files: {
          '/run/cloister/tls.crt': '{{ pem .mesh.cert }}',
          '/run/cloister/tls.key': '{{ pem .mesh.key }}',
          '/etc/app/db.conf': 'password={{ string .secrets.dbPassword }}\n',
          '/etc/app/data.key': '{{ raw .secrets.dataKey }}',
          '/etc/app/literal.txt': { data: 'uses {{ braces }} literally', encoding: 'utf8' },
        },
        env: {
          API_KEY: '{{ hex .secrets.apiKey }}',
          NAME: '{{ string .workload.name }}-{{ string .instance.id }}',
        },
        args: ['/usr/bin/app', '--listen', ':8080', '--cert={{ base64 .secrets.apiCert.cert }}'],
        mesh: {
          ingress: [{ port: 8443, to: 8080 }],
          egress: [{ listen: '127.0.0.1:9000', workload: 'backend', port: 8443 }],
        },
        volumes: { '/data': { secret: 'dataKey', rollback: 'protected' } },
        image: { ref: 'registry.example/web:1', manifestDigest: `sha256:${'12'.repeat(32)}` },
      },
      backend: {
        package: 'api',
        files: { '/etc/ca.pem': '{{ pem .mesh.rootCa }}{{ pem .mesh.intermediateCa }}' },
        mesh: { ingress: [{ port: 8443, to: 9090 }] },
      },
      devbox: { package: 'dev', args: ['sh'] },
    },
    secrets: {
      apiKey: { type: 'symmetric', bits: 256 },
      dataKey: { type: 'symmetric', bits: 256, perInstance: true },
      apiCert: {
        type: 'cert-ecdsa',
        curve: 'P-256',
        dnsNames: ['api.shop.example'],
        validDays: 90,
      },
      dbPassword: { type: 'plain', userDefined: true },
    },
    owners: {
      alice: { publicKey: pem(alice), roles: ['update', 'secrets:dbPassword'] },
      bob: { publicKey: pem(bob), roles: ['update', 'package:api'] },
      carol: { publicKey: pem(carol), roles: ['package:web'] },
    },
    updates: { threshold: 2 },
    recovery: { keys: { alice: pemKey('P-256'), bob: pemKey('RSA') }, threshold: 2 },
    policy: { allowSimulation: true },
  });
}
