// Reads tender.config.yaml for the local runner and the CLI, and makes every
// path in it absolute against the config file's folder: the worker runs in
// its own folder, so a relative path would point somewhere else there.

import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseConfigYaml, type Config, type KeyRef } from '../core/config.js';
import { ConfigError } from '../core/errors.js';

export interface LoadedConfig {
  config: Config;
  path: string;
  dir: string;
  /** Absolute .tender folder. */
  workDir: string;
}

function absoluteRepoUrl(url: string, base: string): string {
  if (!url.startsWith('file:')) return url;
  const rest = url.slice('file:'.length);
  if (rest.startsWith('//') || rest.startsWith('/')) return url;
  return pathToFileURL(resolve(base, decodeURIComponent(rest))).href;
}

function absoluteKey(key: KeyRef, base: string): KeyRef {
  if ('passphraseFile' in key) return { passphraseFile: isAbsolute(key.passphraseFile) ? key.passphraseFile : resolve(base, key.passphraseFile) };
  return key;
}

export function resolveConfigPaths(config: Config, dir: string): Config {
  return {
    ...config,
    local: config.local && {
      ...config.local,
      workDir: resolve(dir, config.local.workDir),
      vms: config.local.vms.map((v) => ({ ...v, disks: v.disks.map((d) => ({ ...d, path: resolve(dir, d.path) })) })),
    },
    policies: config.policies.map((p) => ({ ...p, repository: { url: absoluteRepoUrl(p.repository.url, dir), key: absoluteKey(p.repository.key, dir) } })),
  };
}

export async function loadConfig(path: string): Promise<LoadedConfig> {
  const abs = resolve(path);
  let text: string;
  try {
    text = await readFile(abs, 'utf8');
  } catch (e: any) {
    if (e?.code === 'ENOENT') throw new ConfigError(`no config at ${abs} — write a tender.config.yaml (see README "Configuration") or pass --config PATH; \`npm start\` makes a demo one under .tender/`);
    throw e;
  }
  const dir = dirname(abs);
  const config = resolveConfigPaths(parseConfigYaml(text, abs), dir);
  return { config, path: abs, dir, workDir: config.local?.workDir ?? resolve(dir, '.tender') };
}
