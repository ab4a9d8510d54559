// Keys and sealing for the repository (docs/repository-format.md, "Keys and encryption").
//
// One master key per repository: 32 bytes for AES-256-GCM and 32 bytes for the
// keyed block ID (keyed BLAKE3 in format 2, HMAC-SHA-256 in format 1). It is
// never stored in the clear: each `keys/<id>` object wraps it under a key
// derived from a passphrase (scrypt) or under a cloud KMS key. Every object the
// repository writes is sealed with the master key; the AAD binds a sealed blob
// to what it claims to be (its block ID, or the kind and name of a metadata
// object), so a blob moved, swapped or replayed under another name fails
// authentication.

import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb } from 'node:crypto';
import { WrongPassphraseError } from '../shared/core/errors.js';

export const CIPHER_AES_256_GCM = 1;
const NONCE = 12;
const TAG = 16;
/** Bytes a sealed object adds to its plaintext: cipher byte, nonce, tag. */
export const SEAL_OVERHEAD = 1 + NONCE + TAG;

export interface MasterKey {
  /** AES-256-GCM key for every sealed object. */
  encryption: Buffer;
  /** Key of the block ID hash (keyed BLAKE3, or HMAC-SHA-256 in format 1): IDs reveal nothing about content to whoever holds the repository. */
  id: Buffer;
}

export function newMasterKey(): MasterKey {
  return { encryption: randomBytes(32), id: randomBytes(32) };
}

export function masterKeyBytes(k: MasterKey): Buffer {
  return Buffer.concat([k.encryption, k.id]);
}

export function masterKeyFromBytes(b: Uint8Array): MasterKey {
  if (b.length !== 64) throw new Error(`master key must be 64 bytes, got ${b.length}`);
  const buf = Buffer.from(b);
  return { encryption: buf.subarray(0, 32), id: buf.subarray(32, 64) };
}


/** Encrypts with a fresh random nonce: [cipher=1][nonce 12][ciphertext][tag 16]. */
export function seal(encKey: Buffer, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const nonce = randomBytes(NONCE);
  const c = createCipheriv('aes-256-gcm', encKey, nonce);
  c.setAAD(aad);
  const body = c.update(plaintext);
  const fin = c.final();
  return Buffer.concat([Buffer.of(CIPHER_AES_256_GCM), nonce, body, fin, c.getAuthTag()]);
}

/** Decrypts and authenticates; returns undefined when authentication fails (the caller names the object). */
export function open(encKey: Buffer, sealed: Uint8Array, aad: Uint8Array): Buffer | undefined {
  if (sealed.length < SEAL_OVERHEAD || sealed[0] !== CIPHER_AES_256_GCM) return undefined;
  const buf = Buffer.isBuffer(sealed) ? sealed : Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  const nonce = buf.subarray(1, 1 + NONCE);
  const tag = buf.subarray(buf.length - TAG);
  const d = createDecipheriv('aes-256-gcm', encKey, nonce);
  d.setAAD(aad);
  d.setAuthTag(tag);
  try {
    const out = d.update(buf.subarray(1 + NONCE, buf.length - TAG));
    d.final();
    return out;
  } catch {
    return undefined;
  }
}

const BLOCK_AAD_PREFIX = Buffer.from('tender-v1:block:', 'utf8');

/** A block blob's associated data: the block's ID, so a blob opens only as the block it was sealed as (the codec threads make the same, worker/codec-pool.ts). */
export function blockAad(id: Uint8Array): Buffer {
  return Buffer.concat([BLOCK_AAD_PREFIX, id]);
}

export function aadFor(kind: string, name: string): Buffer {
  return Buffer.from(`tender-v1:${kind}:${name}`, 'utf8');
}

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

/** ~100 ms and 32 MiB on a current core: slow enough to make guessing expensive, fast enough for every run. */
export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 15, r: 8, p: 1 };

function deriveKek(passphrase: string, salt: Buffer, params: ScryptParams): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scryptCb(passphrase.normalize('NFC'), salt, 32, { ...params, maxmem: 256 * params.N * params.r + 1024 * 1024 }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );
}

/** The `keys/<id>` record for a passphrase. */
export interface PassphraseKeyRecord {
  kind: 'passphrase';
  kdf: 'scrypt';
  params: ScryptParams;
  salt: string;
  /** Master key sealed under the derived key, base64. */
  wrapped: string;
  created: string;
}

export async function wrapWithPassphrase(master: MasterKey, passphrase: string, now: Date, params = DEFAULT_SCRYPT): Promise<PassphraseKeyRecord> {
  if (passphrase.length < 8) throw new WrongPassphraseError('the passphrase is too short: use at least 8 characters (a long random one is best)');
  const salt = randomBytes(16);
  const kek = await deriveKek(passphrase, salt, params);
  return {
    kind: 'passphrase',
    kdf: 'scrypt',
    params,
    salt: salt.toString('base64'),
    wrapped: seal(kek, masterKeyBytes(master), aadFor('key', 'master')).toString('base64'),
    created: now.toISOString(),
  };
}

export async function unwrapWithPassphrase(rec: PassphraseKeyRecord, passphrase: string): Promise<MasterKey | undefined> {
  const kek = await deriveKek(passphrase, Buffer.from(rec.salt, 'base64'), rec.params);
  const bytes = open(kek, Buffer.from(rec.wrapped, 'base64'), aadFor('key', 'master'));
  return bytes ? masterKeyFromBytes(bytes) : undefined;
}

/**
 * Wraps the master key with a key held by a cloud key service (AWS KMS, Azure
 * Key Vault): the repository then opens for whoever may use that key, with no
 * passphrase to store or rotate.
 */
export interface KeyWrapper {
  readonly provider: 'aws-kms' | 'azure-keyvault';
  readonly keyId: string;
  wrap(master: Buffer): Promise<string>;
  /** The master key bytes, or undefined when this key did not wrap this record. */
  unwrap(wrapped: string): Promise<Buffer | undefined>;
}

/** The `keys/<id>` record for a master key wrapped by a cloud key service. */
export interface WrappedKeyRecord {
  kind: 'wrapped';
  provider: KeyWrapper['provider'];
  keyId: string;
  wrapped: string;
  created: string;
}

export type KeyRecord = PassphraseKeyRecord | WrappedKeyRecord;

/** What opens a repository: a passphrase, or a cloud key. */
export type RepositorySecret = string | KeyWrapper;

export async function wrapMasterKey(master: MasterKey, secret: RepositorySecret, now: Date, params = DEFAULT_SCRYPT): Promise<KeyRecord> {
  if (typeof secret === 'string') return wrapWithPassphrase(master, secret, now, params);
  return { kind: 'wrapped', provider: secret.provider, keyId: secret.keyId, wrapped: await secret.wrap(masterKeyBytes(master)), created: now.toISOString() };
}

/** Undefined when this secret does not open this record (wrong passphrase, another key). */
export async function unwrapMasterKey(rec: KeyRecord, secret: RepositorySecret): Promise<MasterKey | undefined> {
  if (rec.kind === 'passphrase') return typeof secret === 'string' ? unwrapWithPassphrase(rec, secret) : undefined;
  if (rec.kind === 'wrapped' && typeof secret !== 'string' && secret.provider === rec.provider && secret.keyId === rec.keyId) {
    const bytes = await secret.unwrap(rec.wrapped);
    return bytes ? masterKeyFromBytes(bytes) : undefined;
  }
  return undefined;
}

export function describeSecret(secret: RepositorySecret): string {
  return typeof secret === 'string' ? 'the passphrase' : `${secret.provider === 'aws-kms' ? 'KMS key' : 'Key Vault key'} ${secret.keyId}`;
}
