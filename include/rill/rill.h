/**
 * @file
 * rill: Kafka stream processing out of lightweight actors.
 *
 * The umbrella header: include this one, or the individual headers. The
 * testkit (embedded broker, test helpers) is separate: <rill/testkit.h>.
 */
#ifndef RILL_H
#define RILL_H

#include <rill/common.h>
#include <rill/actor.h>
#include <rill/stream.h>
#include <rill/supervisor.h>
#include <rill/kafka.h>
#include <rill/state.h>
#include <rill/observe.h>

#endif /* RILL_H */
