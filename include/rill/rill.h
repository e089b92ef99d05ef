/*
 * rill: Kafka stream processing out of lightweight actors.
 *
 * The umbrella header: include this one, or the individual headers.
 */
#ifndef RILL_H
#define RILL_H

#include <rill/common.h>
#include <rill/actor.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/kafka.h>
#include <rill/testkit.h>

#endif /* RILL_H */
