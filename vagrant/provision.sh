#!/usr/bin/env bash
# Provisioning: pktbeat's set-up (the same script as the README, test tools included), the .deb built
# and installed with its systemd unit started (the one place the unit really runs: CI's init is not
# systemd), then a single-node Elasticsearch 8 and Kibana for the output tests (ES_URL).
set -euo pipefail
bash /pktbeat/scripts/setup.sh dev

# The package, as an operator installs it: apt resolves its Depends, the unit starts as the pktbeat user.
deb=$(bash /pktbeat/scripts/package.sh --out /var/tmp/pktbeat-dist | tail -1)
apt-get install -y -q "$deb"
systemctl daemon-reload
systemctl enable --now pktbeat
sleep 20
systemctl is-active --quiet pktbeat || { journalctl -u pktbeat --no-pager | tail -30; exit 1; }
journalctl -u pktbeat --no-pager | grep -q "capturing on" || { journalctl -u pktbeat --no-pager | tail -30; exit 1; }
ps -o user=,comm= -C pktbeat | head -3
grep Cap /proc/"$(systemctl show -p MainPID --value pktbeat)"/status

if ! dpkg-query -W -f='${Status}' elasticsearch 2>/dev/null | grep -q "install ok installed"; then
  apt-get install -y -q gnupg apt-transport-https curl
  curl -fsSL https://artifacts.elastic.co/GPG-KEY-elasticsearch | gpg --dearmor -o /usr/share/keyrings/elastic.gpg
  echo "deb [signed-by=/usr/share/keyrings/elastic.gpg] https://artifacts.elastic.co/packages/8.x/apt stable main" \
    > /etc/apt/sources.list.d/elastic-8.x.list
  apt-get update -q
  apt-get install -y -q elasticsearch kibana
  # Plain HTTP on localhost for the test suite; security stays on with a known password.
  sed -i 's/^xpack.security.http.ssl:/xpack.security.http.ssl:\n  enabled: false\n#/' /etc/elasticsearch/elasticsearch.yml || true
  systemctl enable --now elasticsearch
  printf 'changeme\nchangeme\n' | /usr/share/elasticsearch/bin/elasticsearch-reset-password -u elastic -i -b || true
  systemctl enable --now kibana
fi
echo 'export ES_URL=http://elastic:changeme@localhost:9200' > /etc/profile.d/pktbeat-es.sh
echo "provisioned: pktbeat.service runs (journalctl -u pktbeat); cd /pktbeat && bash scripts/setup.sh test (ES_URL is set)"
