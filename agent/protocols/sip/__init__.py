"""SIP over UDP or TCP: one event per request or response, with URIs, headers, auth and SDP fields."""
