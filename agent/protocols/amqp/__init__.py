"""AMQP 0-9-1 (RabbitMQ): methods paired with replies, published and delivered messages, as Packetbeat reports them."""
