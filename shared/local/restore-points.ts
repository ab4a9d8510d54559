// RestorePoints for the local runner: the repository opened the way a local
// worker opens it (store from the URL, key from the policy's KeyRef).

import type { RestorePoints } from '../ports/restore-points.js';
import { openStoreFromUrl } from '../../worker/store-from-url.js';
import { repositorySecretFromKeyRef } from '../../worker/keys.js';
import { createRestorePointsPort } from '../../worker/restore-points.js';

export function createLocalRestorePoints(): RestorePoints {
  return createRestorePointsPort({ openStore: (url) => openStoreFromUrl(url), secret: (key) => repositorySecretFromKeyRef(key) });
}
