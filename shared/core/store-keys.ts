// Key and range checks every ObjectStore adapter shares (S3, Azure Blob).

import type { GetRange } from '../ports/object-store.js';
import { ConfigError } from './errors.js';

/** "a/b/" for "a/b", "/a/b/" or "a/b/"; "" for no prefix. */
export function normalisePrefix(p: string): string {
  const trimmed = p.replace(/^\/+|\/+$/g, '');
  return trimmed === '' ? '' : trimmed + '/';
}

export function checkKey(key: string, location: string): string {
  if (typeof key !== 'string' || key === '') {
    throw new ConfigError(`${location}: invalid object key "${key}": it is empty`);
  }
  return key;
}

export function checkRange(range: GetRange | undefined, location: string, key: string): void {
  if (range && !(Number.isSafeInteger(range.offset) && range.offset >= 0 && Number.isSafeInteger(range.length) && range.length >= 0)) {
    throw new RangeError(`${location} get "${key}": range offset and length must be whole numbers ≥ 0 (got ${range.offset}, ${range.length})`);
  }
}
