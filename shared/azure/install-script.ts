// The script the managed Run Command runs on the worker (seed 000, "Worker
// Deployment" step 3): download the bundle through its SAS, check its sha256
// before anything is unpacked or run, and start the agent as a systemd unit.
// Protected parameters reach the script as environment variables and are not
// returned by the Run Command API, so the SAS never shows in its output.
//
// TENDER_DIR and TENDER_UNIT_DIR exist for tests; on a worker the defaults hold.
//
// Exit codes the installer maps to named errors:
//   0  installed (or already running this bundle)
//   42 sha256 mismatch            → BundleIntegrityError
//   43 download refused (403/404) → AccessDeniedError
//   44 storage account unreachable → TransientError (private endpoint / DNS)

export const EXIT = { integrity: 42, refused: 43, unreachable: 44 } as const;

/** The line the script prints on success, with the digest it checked. */
export const INSTALLED_MARKER = 'tender-installed';

export function installScript(opts: { httpsOnly: boolean }): string {
  const proto = opts.httpsOnly ? "--proto '=https' --tlsv1.2 " : '';
  return `#!/bin/bash
set -uo pipefail
umask 077
DIR=\${TENDER_DIR:-/opt/tender}
UNIT_DIR=\${TENDER_UNIT_DIR:-/etc/systemd/system}
mkdir -p "$DIR"
if systemctl is-active --quiet tender-agent && [ -f "$DIR/installed.sha256" ] && [ "$(cat "$DIR/installed.sha256")" = "$BUNDLE_SHA256" ]; then
  echo "${INSTALLED_MARKER} $BUNDLE_SHA256"; exit 0
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
code=$(curl -sS ${proto}--retry 5 --retry-delay 2 --connect-timeout 20 --max-time 600 -o "$TMP/bundle.tgz" -w '%{http_code}' "$BUNDLE_URL") || { echo "could not reach the storage account to download the bundle" >&2; exit ${EXIT.unreachable}; }
if [ "$code" = 403 ] || [ "$code" = 404 ]; then echo "the bundle download was refused (HTTP $code)" >&2; exit ${EXIT.refused}; fi
if [ "$code" != 200 ]; then echo "the bundle download failed (HTTP $code)" >&2; exit ${EXIT.unreachable}; fi
got=$(sha256sum "$TMP/bundle.tgz" | cut -d' ' -f1)
if [ "$got" != "$BUNDLE_SHA256" ]; then echo "bundle sha256 is $got, expected $BUNDLE_SHA256: not unpacked, not run" >&2; exit ${EXIT.integrity}; fi
rm -rf "$DIR/app" && mkdir -p "$DIR/app" && tar -xzf "$TMP/bundle.tgz" -C "$DIR/app" || { echo "the bundle could not be unpacked" >&2; exit 1; }
NODE="$DIR/app/node/bin/node"
[ -x "$NODE" ] || NODE=$(command -v node || true)
[ -n "$NODE" ] || { echo "the bundle carries no node runtime and none is installed" >&2; exit 1; }
{
  printf 'TENDER_WORKER_ID=%s\\n' "$TENDER_WORKER_ID"
  printf 'TENDER_JOB_QUEUE_URL=%s\\n' "$TENDER_JOB_QUEUE_URL"
  printf 'TENDER_REPORT_QUEUE_URL=%s\\n' "$TENDER_REPORT_QUEUE_URL"
  [ -n "\${AZURE_CLIENT_ID:-}" ] && printf 'AZURE_CLIENT_ID=%s\\n' "$AZURE_CLIENT_ID"
  printf 'NODE_PATH=%s\\n' "$DIR/app/node_modules"
} > "$DIR/agent.env"
chmod 600 "$DIR/agent.env"
cat > "$UNIT_DIR/tender-agent.service" <<UNIT
[Unit]
Description=Tender backup worker agent
After=network-online.target
[Service]
EnvironmentFile=$DIR/agent.env
ExecStart=$NODE $DIR/app/agent.cjs
WorkingDirectory=$DIR
Restart=on-failure
RestartSec=5
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload && systemctl enable tender-agent && systemctl restart tender-agent || { echo "the agent service did not start" >&2; exit 1; }
echo "$BUNDLE_SHA256" > "$DIR/installed.sha256"
echo "${INSTALLED_MARKER} $BUNDLE_SHA256"
`;
}
