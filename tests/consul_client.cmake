# ---- the Consul client: libs/consul ------------------------------------------------------
# Against a scripted HTTP server in the test process (support/http_responder.c), plain, TLS
# (certificates from tools/make-certs.sh) and on a unix socket.
llmserve_test(test_consul_client unit/consul/test_consul_client.c llmserve_consul
              PkgConfig::CJSON)
