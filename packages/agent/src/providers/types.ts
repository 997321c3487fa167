/**
 * The interface every in-TEE evidence source implements. The agent asks its TEE for evidence
 * over 64 bytes of report data it chose (the activation binding of nonce and key) and gets back
 * the raw evidence plus whatever certificates the platform hands out with it.
 */

/** The TEE types the agent can produce evidence for (same names as the evidence library's). */
export type AgentTeeType = 'sev-snp' | 'tdx' | 'sgx' | 'sim';

/** Certificates the SNP host hands out in the extended report's GHCB certificate table. */
export interface SnpPlatformCerts {
  readonly vcek?: Uint8Array;
  readonly vlek?: Uint8Array;
  readonly ask?: Uint8Array;
  readonly ark?: Uint8Array;
}

/** What a provider returns: the evidence bytes of its type, and platform certificates if any. */
export interface AgentEvidence {
  readonly type: AgentTeeType;
  readonly data: Uint8Array;
  readonly certs?: SnpPlatformCerts;
  /** The raw configfs-tsm auxblob (SNP certificate table), sent along for the verifier. */
  readonly aux?: Uint8Array;
}

/** One source of evidence inside the TEE. */
export interface EvidenceProvider {
  /** The TEE type this provider's evidence is (known after construction for sim and Gramine). */
  readonly type: AgentTeeType | 'tsm';
  /** Evidence whose report data equals `reportData` (exactly 64 bytes). */
  getEvidence(reportData: Uint8Array): Promise<AgentEvidence>;
}

/**
 * The file operations the file-based providers use. The default is node:fs; tests inject a
 * wrapper over the same real files that plays the kernel's part (producing outputs on write).
 */
export interface ProviderFs {
  readFile(path: string): Promise<Uint8Array>;
  writeFile(path: string, data: Uint8Array): Promise<void>;
  mkdir(path: string): Promise<void>;
  rmdir(path: string): Promise<void>;
}
