/**
 * Collateral: what a verifier needs besides the evidence to judge it.
 *
 * Intel: the `QuoteCollateralV3` JSON form used by Phala-Network/dcap-qvl and by the vectors
 * (issuer chains as PEM, CRLs as hex DER, TCB Info and QE Identity as the exact signed JSON text
 * with hex r||s signatures). Never re-serialise `tcb_info` / `qe_identity`: the signature covers
 * their exact bytes.
 *
 * AMD: the VCEK or VLEK certificate (DER), the ASK/ASVK and ARK (usually pinned in the library),
 * and optionally the ARK-signed CRL of revoked ASKs.
 */
export interface IntelCollateralJson {
  readonly pck_crl_issuer_chain: string;
  readonly root_ca_crl: string;
  readonly pck_crl: string;
  readonly tcb_info_issuer_chain: string;
  readonly tcb_info: string;
  readonly tcb_info_signature: string;
  readonly qe_identity_issuer_chain: string;
  readonly qe_identity: string;
  readonly qe_identity_signature: string;
}

export interface SnpCollateral {
  /** VCEK or VLEK, DER. */
  readonly endorsementKeyCert?: Uint8Array;
  /** ASK or ASVK, then ARK, DER (optional: the library pins AMD's). */
  readonly chain?: readonly Uint8Array[];
  /** ARK-signed CRL of revoked ASKs / ASVKs, DER. */
  readonly crl?: Uint8Array;
}

/** Which Intel collateral a quote needs. */
export interface IntelCollateralQuery {
  readonly tee: 'sgx' | 'tdx';
  /** 6 bytes, hex. */
  readonly fmspc: string;
  readonly ca: 'processor' | 'platform';
}

/** Which AMD collateral a report needs. */
export interface SnpCollateralQuery {
  readonly product: 'Milan' | 'Genoa' | 'Turin';
  readonly signingKey: 'vcek' | 'vlek';
  /** hwID hex (64 bytes; 8 on Turin) for a VCEK. */
  readonly hwid: string;
  readonly reportedTcb: {
    bootloader: number;
    tee: number;
    snp: number;
    microcode: number;
    fmc?: number;
  };
}

/**
 * Supplies collateral. Implementations: an offline bundle (files), and a caching fetcher for
 * Intel PCS / AMD KDS that is off unless configured. Verification never reaches the network by
 * surprise.
 */
export interface CollateralSource {
  intel(query: IntelCollateralQuery): Promise<IntelCollateralJson>;
  snp(query: SnpCollateralQuery): Promise<SnpCollateral>;
}
