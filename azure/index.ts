// The Azure Functions app (Functions v4 programming model; the Durable
// Functions extension runs the orchestrations). Everything is built at cold
// start and fails fast: the policies come from tender.config.yaml (package
// root, or TENDER_CONFIG / TENDER_CONFIG_YAML), the Azure settings from the
// app's TENDER_AZURE_* settings. The cloud adapters are made once per
// instance and reused by warm invocations.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { app } from '@azure/functions';
import * as df from 'durable-functions';
import { parseConfigYaml, type Config } from '../shared/core/config.js';
import { ConfigError } from '../shared/core/errors.js';
import { systemClock } from '../shared/core/clock.js';
import { azureSettingsFromEnv } from '../shared/azure/settings.js';
import { createAzureCloud, type AzureCloud } from '../shared/azure/azure-cloud.js';
import { contextLogger } from './activities.js';
import { registerTenderApp, type FunctionsApi } from './app.js';

function loadConfig(env: NodeJS.ProcessEnv): Config {
  if (env.TENDER_CONFIG_YAML?.trim()) return parseConfigYaml(env.TENDER_CONFIG_YAML, 'TENDER_CONFIG_YAML');
  const path = env.TENDER_CONFIG?.trim() || join(process.cwd(), 'tender.config.yaml');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read the Tender config ${path} (${(e as NodeJS.ErrnoException).code}) — deploy tender.config.yaml with the app, or set TENDER_CONFIG / TENDER_CONFIG_YAML`, { cause: e });
  }
  return parseConfigYaml(text, path);
}

const config = loadConfig(process.env);
const settings = azureSettingsFromEnv({ ...process.env, TENDER_APPLIANCE_ID: process.env.TENDER_APPLIANCE_ID ?? config.applianceId });
if (settings.applianceId !== config.applianceId) {
  throw new ConfigError(`TENDER_APPLIANCE_ID (${settings.applianceId}) and the config's applianceId (${config.applianceId}) differ — they name the same deployment; make them agree`);
}

let cloud: Promise<AzureCloud> | undefined;
const cloudOnce = () => {
  cloud ??= createAzureCloud({ settings });
  cloud.catch(() => (cloud = undefined));
  return cloud;
};

registerTenderApp({
  api: { app, df } as unknown as FunctionsApi,
  config,
  depsFor: async (context) => {
    const c = await cloudOnce();
    return { cloud: c, restorePoints: c.restorePoints, clock: systemClock, logger: contextLogger(context) };
  },
});
