// Reading the JSON the clouds' CLIs print. People collect several accounts'
// or zones' output into one file by appending (`aws … >> describe-vpcs.json`),
// which makes a file of concatenated JSON documents, not one document: both
// are accepted. A file that is neither is bad input, named with its position.

import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';

function lineCol(text: string, offset: number): string {
  const before = text.slice(0, offset);
  const line = before.split('\n').length;
  const col = offset - before.lastIndexOf('\n');
  return `line ${line}, column ${col}`;
}

/** Splits text into top-level JSON values by bracket depth, outside strings. */
function splitDocuments(text: string): Array<{ start: number; text: string }> {
  const docs: Array<{ start: number; text: string }> = [];
  let depth = 0;
  let inString = false;
  let escaped = false;
  let start = -1;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (inString) {
      if (escaped) escaped = false;
      else if (ch === '\\') escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === '"') {
      if (depth === 0) throw Object.assign(new Error('unexpected string outside an object or array'), { offset: i });
      inString = true;
    } else if (ch === '{' || ch === '[') {
      if (depth === 0) start = i;
      depth++;
    } else if (ch === '}' || ch === ']') {
      depth--;
      if (depth === 0 && start >= 0) {
        docs.push({ start, text: text.slice(start, i + 1) });
        start = -1;
      }
      if (depth < 0) throw Object.assign(new Error(`unexpected "${ch}"`), { offset: i });
    } else if (!/\s/.test(ch) && depth === 0) {
      throw Object.assign(new Error(`unexpected "${ch}" outside an object or array`), { offset: i });
    }
  }
  if (depth !== 0 || inString) throw Object.assign(new Error('it ends in the middle of a value (truncated?)'), { offset: text.length });
  return docs;
}

/**
 * Parses one JSON document or several concatenated ones. Throws ConfigError
 * naming the file, the position and how to write the file again.
 */
export function parseJsonDocuments(text: string, fileName: string, howToWrite: string): unknown[] {
  if (text.trim() === '') throw new ConfigError(`${fileName} is empty: write it with \`${howToWrite}\``);
  try {
    return [JSON.parse(text)];
  } catch (first) {
    let docs: Array<{ start: number; text: string }>;
    try {
      docs = splitDocuments(text);
    } catch (e) {
      const offset = (e as { offset?: number }).offset ?? 0;
      throw new ConfigError(`${fileName} is not valid JSON (${(e as Error).message} at ${lineCol(text, offset)}): write it again with \`${howToWrite}\``, { cause: first });
    }
    if (docs.length <= 1) {
      throw new ConfigError(`${fileName} is not valid JSON (${(first as Error).message}): write it again with \`${howToWrite}\``, { cause: first });
    }
    return docs.map((d) => {
      try {
        return JSON.parse(d.text) as unknown;
      } catch (e) {
        throw new ConfigError(`${fileName} is not valid JSON (${(e as Error).message}, in the document starting at ${lineCol(text, d.start)}): write it again with \`${howToWrite}\``, { cause: e });
      }
    });
  }
}

/**
 * The items under `key` across every document: `{ key: [...] }`, an array of
 * such objects, or (Azure CLI) a bare array of items when `key` is undefined.
 */
export function collectItems(docs: unknown[], fileName: string, key: string | undefined, howToWrite: string): Record<string, unknown>[] {
  const items: Record<string, unknown>[] = [];
  const visit = (doc: unknown) => {
    if (Array.isArray(doc)) {
      if (key === undefined) {
        for (const x of doc) {
          if (Array.isArray(x)) visit(x);
          else if (x && typeof x === 'object') items.push(x as Record<string, unknown>);
          else throw new ConfigError(`${fileName}: expected a list of resources (the output of \`${howToWrite}\`), found ${JSON.stringify(x)} in it`);
        }
      } else doc.forEach(visit);
      return;
    }
    if (key !== undefined && doc && typeof doc === 'object' && Array.isArray((doc as Record<string, unknown>)[key])) {
      for (const x of (doc as Record<string, unknown[]>)[key]!) if (x && typeof x === 'object') items.push(x as Record<string, unknown>);
      return;
    }
    if (key === undefined && doc && typeof doc === 'object' && Array.isArray((doc as Record<string, unknown>).value)) {
      // ARM REST list responses wrap the items in `value`.
      visit((doc as Record<string, unknown>).value);
      return;
    }
    throw new ConfigError(
      `${fileName} is not the output of \`${howToWrite}\`: expected ${key ? `an object with a "${key}" array` : 'a JSON array of resources'}`,
    );
  };
  docs.forEach(visit);
  return items;
}

/**
 * Reads one CLI output file of a `--from DIR` snapshot. A missing or unreadable
 * file is a ConfigError naming it and the command that writes it.
 */
export async function readCliOutputFile(dir: string, file: string, writeCommand: string): Promise<string> {
  const path = join(dir, file);
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code === 'ENOENT' ? `${path} is missing: write it with \`${writeCommand}\`` : `${path} cannot be read (${code ?? (e as Error).message}): check its permissions`,
      { cause: e },
    );
  }
}
