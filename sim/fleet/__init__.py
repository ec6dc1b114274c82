"""The fleet's side for tests and the demo: a TEST PKI (`pki`), the mosquitto broker started on
loopback with TLS and per-device ACLs (`broker`), and many simulated terminals in one process
(`swarm`, for `make bench`)."""
