// Where the repository passphrase comes from. Policies name a source
// (KeyRef), never the passphrase itself, so no secret travels in a step's
// input, a job or a log line.

import { readFile } from 'node:fs/promises';
import type { KeyRef } from '../shared/core/config.js';
import { ConfigError } from '../shared/core/errors.js';

export async function passphraseFromKeyRef(ref: KeyRef, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if ('passphraseEnv' in ref) {
    const v = env[ref.passphraseEnv];
    if (!v) throw new ConfigError(`the repository passphrase is read from the environment variable ${ref.passphraseEnv}, which is not set — set it, or point repository.key.passphraseFile at a file`);
    return v;
  }
  if ('passphraseFile' in ref) {
    let text: string;
    try {
      text = await readFile(ref.passphraseFile, 'utf8');
    } catch (e: any) {
      throw new ConfigError(`cannot read the repository passphrase file ${ref.passphraseFile} (${e?.code ?? e?.message}) — create it (one line) or fix repository.key.passphraseFile`, { cause: e });
    }
    const v = text.replace(/\r?\n$/, '');
    if (!v) throw new ConfigError(`the repository passphrase file ${ref.passphraseFile} is empty`);
    return v;
  }
  throw new ConfigError('this repository key source (kmsKeyId / keyVaultKeyId) needs its passphraseSecretArn / passphraseSecretId resolved by the cloud adapter before the worker starts; tender-worker on its own reads passphraseEnv or passphraseFile');
}
