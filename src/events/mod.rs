//! Resource events from and to the outside world: the AMQP link to RabbitMQ. The bus that
//! records and applies events is the `dron_actors::bus` actor; without AMQP, events arrive
//! over HTTP (`POST /resources`) and from dron's own job runs only.

pub mod amqp;
