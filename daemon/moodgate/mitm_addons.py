"""Which of mitmproxy's own addons `moodgate serve` runs beside moodgate's.

mitmdump loads every addon mitmproxy has, and mitmproxy offers each of them every event of
every flow. Most are a debugging tool's features (replay, rewriting, saving flows, cookies,
cut/export). A home filter has no use for them, and on a router they cost: with all of them
loaded, the proxy's event loop spends about a fifth more per request (docs/performance.md).
`moodgate serve` therefore runs only what a filter needs; `mitmdump -s .../addon.py` still
gives the whole set to whoever wants it.
"""

from __future__ import annotations

from mitmproxy.addons import (
    block,
    blocklist,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    next_layer,
    onboarding,
    proxyauth,
    proxyserver,
    strip_dns_https_records,
    tlsconfig,
    update_alt_svc,
    upstream_auth,
)

# Left out, by mitmproxy's own names: browser, anticache, anticomp, clientplayback,
# serverplayback, command_history, comment, cut, export, script, mapremote, maplocal,
# modifybody, modifyheaders, stickyauth, stickycookie, save, savehar, keepserving, readfile,
# dumper. Their options (`--set map_local=…`, `--set save_stream_file=…`) are refused as
# unknown rather than silently ignored. `save` would also keep a copy of children's traffic.


def filter_addons() -> list[object]:
    return [
        core.Core(),  # the options and commands everything else rests on
        block.Block(),  # block_global / block_private: never an open proxy
        blocklist.BlockList(),  # block_list: a household's own hard blocks by URL
        strip_dns_https_records.StripDnsHttpsRecords(),  # DNS in local/wireguard modes
        dns_resolver.DnsResolver(),
        disable_h2c.DisableH2C(),
        onboarding.Onboarding(),  # http://mitm.it: how the CA gets onto a child's device
        proxyauth.ProxyAuth(),  # proxyauth: one login per child
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        upstream_auth.UpstreamAuth(),  # upstream mode behind another proxy
        update_alt_svc.UpdateAltSvc(),  # reverse mode
        errorcheck.ErrorCheck(),  # an error while starting stops the daemon, non-zero
    ]
