#!/usr/bin/env bash
# Debian packages that some tests need. Installs only what is missing; never fails the build
# by itself: tests that need a missing tool skip with a reason instead.
set -u
need=()
for pair in "dnsmasq:dnsmasq" "ip:iproute2" "tc:iproute2" "nft:nftables" "chromium:chromium"; do
  bin=${pair%%:*}; pkg=${pair##*:}
  command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mapfile -t uniq < <(printf '%s\n' "${need[@]}" | sort -u)
  echo "installing system packages: ${uniq[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${uniq[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${uniq[*]}; dependent tests will skip"
fi
exit 0
