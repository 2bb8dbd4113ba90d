"""Literal HTTP messages used by the HTTP tests (the inputs of Packetbeat's http_test.go, re-created)."""

from __future__ import annotations

GOOGLE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Tue, 14 Aug 2012 22:31:45 GMT\r\n"
    b"Expires: -1\r\n"
    b"Cache-Control: private, max-age=0\r\n"
    b"Content-Type: text/html; charset=UTF-8\r\n"
    b"Content-Encoding: gzip\r\n"
    b"Server: gws\r\n"
    b"Content-Length: 0\r\n"
    b"X-XSS-Protection: 1; mode=block\r\n"
    b"X-Frame-Options: SAMEORIGIN\r\n"
    b"\r\n"
)

GOOGLE_RESPONSE_MIXED_CASE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Tue, 14 Aug 2012 22:31:45 GMT\r\n"
    b"EXPIRES: -1\r\n"
    b"cACHE-Control: private, max-age=0\r\n"
    b"Content-Type: text/html; charset=UTF-8\r\n"
    b"Content-Encoding: gzip\r\n"
    b"SERVER: gws\r\n"
    b"content-LeNgTh: 0\r\n"
    b"X-XSS-Protection: 1; mode=block\r\n"
    b"X-Frame-Options: SAMEORIGIN\r\n"
    b"\r\n"
)

_CHROME_HEADERS = (
    b"Host: www.google.ro\r\n"
    b"Connection: keep-alive\r\n"
    b"User-Agent: Mozilla/5.0 (Macintosh; Intel Mac OS X 10_7_4) AppleWebKit/537.1 (KHTML, like Gecko) "
    b"Chrome/21.0.1180.75 Safari/537.1\r\n"
    b"Accept: */*\r\n"
    b"X-Chrome-Variations: CLa1yQEIj7bJAQiftskBCKS2yQEIp7bJAQiptskBCLSDygE=\r\n"
    b"Referer: http://www.google.ro/\r\n"
    b"Accept-Encoding: gzip,deflate,sdch\r\n"
    b"Accept-Language: en-US,en;q=0.8\r\n"
)
_CHROME_COOKIE = (
    b"Accept-Charset: ISO-8859-1,utf-8;q=0.7,*;q=0.3\r\n"
    b"Cookie: PREF=ID=6b67d166417efec4:U=69097d4080ae0e15:FF=0:TM=1340891937:LM=1340891938:S=8t97UBiUwKbESvVX; "
    b"NID=61=sf10OV-t02wu5PXrc09AhGagFrhSAB2C_98ZaI53-uH4jGiVG_yz9WmE3vjEBcmJyWUogB1ZF5puyDIIiB-UIdLd4OEgPR3x1LH"
    b"NyuGmEDaNbQ_XaxWQqqQ59mX1qgLQ\r\n"
)

GOOGLE_REQUEST = b"GET / HTTP/1.1\r\n" + _CHROME_HEADERS + _CHROME_COOKIE + b"\r\n"
GOOGLE_REQUEST_WITH_BODY = (b"GET / HTTP/1.1\r\n" + _CHROME_HEADERS + b"Content-Length: 2\r\n" + _CHROME_COOKIE
                            + b"\r\n" + b"xx")

CURL_POST_EMPTY = (
    b"POST / HTTP/1.1\r\n"
    b"user-agent: curl/7.35.0\r\n"
    b"host: localhost:9000\r\n"
    b"accept: */*\r\n"
    b"authorization: Company 1\r\n"
    b"content-length: 0\r\n"
    b"connection: close\r\n"
    b"\r\n"
)

MOVED_301 = (
    b"HTTP/1.1 301 Moved Permanently\r\n"
    b"Date: Sun, 29 Sep 2013 16:53:59 GMT\r\n"
    b"Server: Apache\r\n"
    b"Location: http://www.hotnews.ro/\r\n"
    b"Vary: Accept-Encoding\r\n"
    b"Content-Length: 290\r\n"
    b"Connection: close\r\n"
    b"Content-Type: text/html; charset=iso-8859-1\r\n"
    b"\r\n"
    b"<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\r\n"
    b"<html><head>\r\n"
    b"<title>301 Moved Permanently</title>\r\n"
    b"</head><body>\r\n"
    b"<h1>Moved Permanently</h1>\r\n"
    b"<p>The document has moved <a href=\"http://www.hotnews.ro/\">here</a>.</p>\r\n"
    b"<hr>\r\n"
    b"<address>Apache Server at hotnews.ro Port 80</address>\r\n"
    b"</body></html>"
)

NOT_FOUND_404 = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"Server: Apache-Coyote/1.1\r\n"
    b"Content-Type: text/html;charset=utf-8\r\n"
    b"Content-Length: 18\r\n"
    b"Date: Mon, 31 Jul 2017 11:31:53 GMT\r\n"
    b"\r\n"
    b"Http Response Body"
)

ERROR_500 = (
    b"HTTP/1.1 500 Internal Server Error\r\n"
    b"Server: Apache-Coyote/1.1\r\n"
    b"Content-Type: text/html;charset=utf-8\r\n"
    b"Content-Length: 2\r\n"
    b"Date: Mon, 30 Jul 2017 00:00:00 GMT\r\n"
    b"\r\n"
    b"xx"
)

ERROR_500_NO_PHRASE = ERROR_500.replace(b"500 Internal Server Error", b"500 ")

SOAP_WITH_AUTH = (
    b"POST /services/ObjectControl?ID=client0 HTTP/1.1\r\n"
    b"User-Agent: Mozilla/4.0 (compatible; MSIE 6.0; MS Web Services Client Protocol 2.0.50727.5472)\r\n"
    b"Content-Type: text/xml; charset=utf-8\r\n"
    b"SOAPAction: \"\"\r\n"
    b"Authorization: Basic ZHVtbXk6NmQlc1AwOC1XemZ3Cg\r\n"
    b"Proxy-Authorization: Basic cHJveHk6MWM3MGRjM2JhZDIwCg==\r\n"
    b"Host: production.example.com\r\n"
    b"Content-Length: 0\r\n"
    b"Expect: 100-continue\r\n"
    b"Accept-Encoding: gzip\r\n"
    b"X-Forwarded-For: 10.216.89.132\r\n"
    b"\r\n"
)

SOAP_REDACT_HEADER = SOAP_WITH_AUTH.replace(
    b"Authorization: Basic ZHVtbXk6NmQlc1AwOC1XemZ3Cg\r\n"
    b"Proxy-Authorization: Basic cHJveHk6MWM3MGRjM2JhZDIwCg==\r\n",
    b"Header-To-Redact: sensitive-value\r\n")

LOGIN_URI_WITH_SPACE = (
    b"GET http://localhost:8080/test?password=two secret HTTP/1.1\r\n"
    b"Host: www.google.com\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 23\r\n"
    b"\r\n"
    b"username=ME&pass=twosecret"  # 26 bytes: only 23 belong to the body, as in the Go test
)

LOGIN_POST = (
    b"POST /users/login HTTP/1.1\r\n"
    b"HOST: www.example.com\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 28\r\n"
    b"\r\n"
    b"username=ME&password=secret\r\n"
)

LOGIN_GET_WITH_BODY = (
    b"GET /users/login HTTP/1.1\r\n"
    b"HOST: www.example.com\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 53\r\n"
    b"\r\n"
    b"password=my_secret_pass&Password=my_secret_password_2\r\n"
)

GZIP_PAYLOAD = b"hola\n"
# Raw DEFLATE of "hola\n", as a server sending "deflate" without the zlib wrapper does.
DEFLATE_BODY = bytes([0xCB, 0xC8, 0xCF, 0x49, 0xE4, 0x02, 0x00])
GZIP_BODY = (bytes([0x1F, 0x8B, 0x08, 0x00, 0x68, 0xC4, 0x6A, 0x5B, 0x00, 0x03]) + DEFLATE_BODY
             + bytes([0x78, 0xAD, 0xDB, 0xD1, 0x05, 0x00, 0x00, 0x00]))
# gzip of the deflate of "hola\n": decoding needs gzip first, then deflate.
GZIP_OF_DEFLATE = bytes([
    0x1F, 0x8B, 0x08, 0x00, 0x65, 0xDB, 0x6A, 0x5B, 0x00, 0x03, 0x3B, 0x7D,
    0xE2, 0xBC, 0xE7, 0x13, 0x26, 0x06, 0x00, 0x95, 0xFA, 0x49, 0xBF, 0x07,
    0x00, 0x00, 0x00,
])
