package dev.streamshop.producer;

import java.math.BigDecimal;
import java.net.URI;
import java.net.URLDecoder;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Instant;
import java.time.temporal.ChronoUnit;
import java.util.UUID;

/**
 * Publishes catalog events to streamshop's ingress streams, as docs/producers.md describes.
 *
 * <p>Usage: {@code java dev.streamshop.producer.Producer [redis-url] [prefix]}; without
 * arguments it reads {@code REDIS_URL} (default {@code redis://127.0.0.1:6380}) and
 * {@code STREAM_PREFIX} (default {@code streamshop}).
 *
 * <p>It sends, to {@code {prefix}:ingest:java-example}: a ProductCreated (and the same
 * event again, as a producer retrying after a timeout would — the gateway keeps one),
 * a StockAdjusted, and one deliberately invalid ProductCreated (price as a string), which
 * ends in {@code {prefix}:dlq:ingest:java-example}. To {@code {prefix}:ingest:produtos}
 * it sends one message in the legacy Portuguese format. Event ids are fixed, so running
 * it twice changes nothing the first run did not.
 */
public final class Producer {
    public static final String SOURCE = "java-example";
    public static final String PRODUCT_ID = "0192f0c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f";
    public static final String SKU = "JAVA-MUG-001";
    public static final long LEGACY_ID = 4242;

    static final String CREATED_EVENT_ID = "0192f0c4-1b2a-7c3d-8e4f-000000000001";
    static final String STOCK_EVENT_ID = "0192f0c4-1b2a-7c3d-8e4f-000000000002";
    static final String INVALID_EVENT_ID = "0192f0c4-1b2a-7c3d-8e4f-000000000003";
    /** uuid5(NAMESPACE_URL, "https://streamshop.dev/legacy/produtos"), see docs/producers.md. */
    static final UUID LEGACY_NAMESPACE = UUID.fromString("4e15ce42-7664-5cb7-a203-c734be102d80");

    public static void main(String[] args) throws Exception {
        String url = args.length > 0 ? args[0] : env("REDIS_URL", "redis://127.0.0.1:6380");
        String prefix = args.length > 1 ? args[1] : env("STREAM_PREFIX", "streamshop");
        URI uri = URI.create(url);
        String host = uri.getHost() != null ? uri.getHost() : "127.0.0.1";
        int port = uri.getPort() > 0 ? uri.getPort() : 6379;

        try (Resp redis = new Resp(host, port)) {
            authenticate(redis, uri);
            String ingress = prefix + ":ingest:" + SOURCE;

            Json created = Json.object()
                .put("type", "ProductCreated")
                .put("product_id", PRODUCT_ID)
                .put("sku", SKU)
                .put("name", "Caneca \"Java\" \u2615 300 ml")
                .put("description", "Cerâmica, lava-louças.\nPasta: C:\\canecas\\java\t(azul) \u0001 \uD83D\uDE00")
                .put("category", "cozinha")
                .put("price", 3990)
                .put("currency", "BRL")
                .put("stock", 25);
            String first = publish(redis, ingress, CREATED_EVENT_ID, "ProductCreated", created);
            String retry = publish(redis, ingress, CREATED_EVENT_ID, "ProductCreated", created);
            System.out.println("ProductCreated  product_id=" + PRODUCT_ID + " entries=" + first + "," + retry
                + " (same event id twice: stored once)");

            Json stock = Json.object()
                .put("type", "StockAdjusted")
                .put("product_id", PRODUCT_ID)
                .put("delta", 5)
                .put("reason", "recebimento NF 123");
            System.out.println("StockAdjusted   product_id=" + PRODUCT_ID + " entry="
                + publish(redis, ingress, STOCK_EVENT_ID, "StockAdjusted", stock));

            Json legacy = Json.object()
                .put("acao", "criado")
                .put("produto", Json.object()
                    .put("id", LEGACY_ID)
                    .put("nome", "Café torrado 500g")
                    .put("descricao", "Grãos \"especiais\" do sul de Minas")
                    .put("preco", new BigDecimal("29.90"))
                    .put("estoque", 12));
            Object legacyEntry = redis.call("XADD", prefix + ":ingest:produtos", "*", "payload", legacy.toString());
            System.out.println("legacy criado   id=" + LEGACY_ID + " product_id=" + legacyProductId(LEGACY_ID)
                + " entry=" + legacyEntry);

            Json invalid = Json.object()
                .put("type", "ProductCreated")
                .put("product_id", "0192f0c4-1b2a-7c3d-8e4f-5a6b7c8d9e10")
                .put("sku", "JAVA-BROKEN-001")
                .put("name", "Preço como texto")
                .put("price", "39.90");
            System.out.println("invalid         id=" + INVALID_EVENT_ID + " entry="
                + publish(redis, ingress, INVALID_EVENT_ID, "ProductCreated", invalid)
                + " (price is a string: goes to " + prefix + ":dlq:ingest:" + SOURCE + ")");
        }
    }

    /** One ingress entry: the documented envelope fields, data as a JSON object. */
    static String publish(Resp redis, String stream, String eventId, String type, Json data) throws Exception {
        Object entryId = redis.call(
            "XADD", stream, "*",
            "id", eventId,
            "type", type,
            "schema", "1",
            "at", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString(),
            "actor", "java-example",
            "data", data.toString());
        return (String) entryId;
    }

    /** The product id streamshop gives a legacy integer id: uuid5(LEGACY_NAMESPACE, "<id>"). */
    static UUID legacyProductId(long legacyId) throws NoSuchAlgorithmException {
        MessageDigest sha1 = MessageDigest.getInstance("SHA-1");
        ByteBuffer namespace = ByteBuffer.allocate(16);
        namespace.putLong(LEGACY_NAMESPACE.getMostSignificantBits());
        namespace.putLong(LEGACY_NAMESPACE.getLeastSignificantBits());
        sha1.update(namespace.array());
        byte[] hash = sha1.digest(Long.toString(legacyId).getBytes(StandardCharsets.UTF_8));
        hash[6] = (byte) ((hash[6] & 0x0f) | 0x50);
        hash[8] = (byte) ((hash[8] & 0x3f) | 0x80);
        ByteBuffer bits = ByteBuffer.wrap(hash, 0, 16);
        return new UUID(bits.getLong(), bits.getLong());
    }

    private static void authenticate(Resp redis, URI uri) throws Exception {
        String userInfo = uri.getRawUserInfo();
        if (userInfo != null && !userInfo.isEmpty()) {
            String[] parts = userInfo.split(":", 2);
            String user = URLDecoder.decode(parts[0], StandardCharsets.UTF_8);
            if (parts.length == 2) {
                String password = URLDecoder.decode(parts[1], StandardCharsets.UTF_8);
                if (user.isEmpty()) {
                    redis.call("AUTH", password);
                } else {
                    redis.call("AUTH", user, password);
                }
            } else {
                redis.call("AUTH", user);
            }
        }
        String path = uri.getPath();
        if (path != null && path.length() > 1 && !path.equals("/0")) {
            redis.call("SELECT", path.substring(1));
        }
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null || value.isEmpty() ? fallback : value;
    }

    private Producer() {}
}
