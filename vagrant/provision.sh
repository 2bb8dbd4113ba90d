#!/usr/bin/env bash
# Provisioning: pktbeat's set-up (the same script as the README), then a
# single-node Elasticsearch 8 and Kibana for the output tests (ES_URL).
set -euo pipefail
bash /pktbeat/scripts/setup.sh

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
echo "provisioned: cd /pktbeat && bash scripts/setup.sh test   (ES_URL is set for the output tests)"
