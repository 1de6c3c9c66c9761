// sbbench's MQTT mode: libmosquitto clients against mosquitto.
#pragma once

#include "bench_options.h"
#include "worker_link.h"

namespace switchboard::bench {

// One worker's share of a mosquitto run: per pair a publisher and a subscriber on its own
// topic, QoS 1, the in-flight window counted until the subscriber has the message (the
// broker acks a QoS 1 publish on receipt, not on delivery). Returns the exit code.
int runMqttWorker(const BenchOptions& options, WorkerLink& link);

}  // namespace switchboard::bench
