"""SIP messages as literal bytes (from the corpus captures), and TCP payloads read back from a capture."""

from __future__ import annotations

from pathlib import Path

from agent.capture.decode import FrameDecoder
from agent.capture.pcapfile import CaptureReader

SDP_8000 = (b"v=0\r\no=- 42 42 IN IP4 10.0.2.20\r\ns=-\r\nc=IN IP4 10.0.2.20\r\nt=0 0\r\n"
            b"m=audio 6000 RTP/AVP 5\r\na=rtpmap:5 DVI4/8000\r\na=recvonly\r\n")

# The INVITE of Packetbeat's TestParseUDP (sip.pcap, first packet).
INVITE = (b"INVITE sip:test@10.0.2.15:5060 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 10.0.2.20:5060;branch=z9hG4bK-2187-1-0\r\n"
          b"From: \"DVI4/8000\" <sip:sipp@10.0.2.20:5060>;tag=1\r\n"
          b"To: test <sip:test@10.0.2.15:5060>\r\n"
          b"Call-ID: 1-2187@10.0.2.20\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Contact: sip:sipp@10.0.2.20:5060\r\n"
          b"Max-Forwards: 70\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length:   123\r\n\r\n") + SDP_8000

TRYING = (b"SIP/2.0 100 Trying\r\n"
          b"Via: SIP/2.0/UDP 10.0.2.20:5060;branch=z9hG4bK-2187-1-0\r\n"
          b"From: \"DVI4/8000\" <sip:sipp@10.0.2.20:5060>;tag=1\r\n"
          b"To: test <sip:test@10.0.2.15:5060>\r\n"
          b"Call-ID: 1-2187@10.0.2.20\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"User-Agent: FreeSWITCH-mod_sofia/1.6.12-20-b91a0a6~64bit\r\n"
          b"Content-Length: 0\r\n\r\n")

# sip_authenticated_register.pcap, first packet.
REGISTER = (b"REGISTER sip:sip.cybercity.dk SIP/2.0\r\n"
            b"Via: SIP/2.0/UDP 192.168.1.2;branch=z9hG4bKnp112903503-43a64480192.168.1.2;rport\r\n"
            b"From: <sip:voi18062@sip.cybercity.dk>;tag=6bac55c\r\n"
            b"To: <sip:voi18062@sip.cybercity.dk>\r\n"
            b"Call-ID: 578222729-4665d775@578222732-4665d772\r\n"
            b"Contact:  <sip:voi18062@192.168.1.2:5060;line=aca6b97ca3f5e51a>;expires=1200;q=0.500\r\n"
            b"Expires: 1200\r\n"
            b"CSeq: 75 REGISTER\r\n"
            b"Content-Length: 0\r\n"
            b"Authorization: Digest username=\"voi18062\",realm=\"sip.cybercity.dk\",uri=\"sip:192.168.1.2\","
            b"nonce=\"1701b22972b90f440c3e4eb250842bb\",opaque=\"1701a1351f70795\",nc=\"00000001\","
            b"response=\"79a0543188495d288c9ebbe0c881abdc\"\r\n"
            b"Max-Forwards: 70\r\n"
            b"User-Agent: Nero SIPPS IP Phone Version 2.0.51.16\r\n\r\n")

REGISTER_OK = (b"SIP/2.0 200 OK\r\n"
               b"Call-ID: 578222729-4665d775@578222732-4665d772\r\n"
               b"Contact: <sip:voi18062@192.168.1.2:5060;line=aca6b97ca3f5e51a>;q=0.500;expires=1200\r\n"
               b"CSeq: 75 REGISTER\r\n"
               b"From: <sip:voi18062@sip.cybercity.dk>;tag=6bac55c\r\n"
               b"P-Associated-URI: <sip:35104723@sip.cybercity.dk>\r\n"
               b"To: <sip:voi18062@sip.cybercity.dk>;tag=00-04081-1701b256-5586b7324\r\n"
               b"Via: SIP/2.0/UDP 192.168.1.2;received=80.230.219.70;rport=5060;"
               b"branch=z9hG4bKnp112903503-43a64480192.168.1.2\r\n"
               b"Content-Length: 0\r\n\r\n")


def sip(first_line: str, *headers: str, body: bytes = b"", length: int | None = None) -> bytes:
    """A message from its parts; Content-Length is added unless `length` is -1."""
    lines = [first_line, *headers]
    if length != -1:
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


BASE_HEADERS = ("Via: SIP/2.0/TCP 10.1.1.1:5060;branch=z9hG4bK-1", "From: <sip:alice@example.test>;tag=a1",
                "To: <sip:bob@example.test>", "Call-ID: call-1@10.1.1.1", "CSeq: 2 OPTIONS")


def tcp_payloads(pcap: Path, server_port: int = 5060) -> list[tuple[bool, bytes]]:
    """(towards the server?, payload) of every TCP segment that carries data."""
    out = []
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts_ns, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts_ns, wire_len)
            if pkt is not None and pkt.l4proto == 6 and pkt.payload:
                out.append((pkt.dport == server_port, bytes(pkt.payload)))
    return out


def udp_payloads(pcap: Path) -> list[bytes]:
    out = []
    with CaptureReader(pcap) as reader:
        decoder = FrameDecoder(reader.info.linktype)
        for ts_ns, frame, wire_len in reader:
            pkt = decoder.decode(frame, ts_ns, wire_len)
            if pkt is not None and pkt.l4proto == 17 and pkt.payload:
                out.append(bytes(pkt.payload))
    return out
