"""Synthetic shop data in Brazilian Portuguese: accounts, a catalog and baskets (pure, seeded).

Faker's ``pt_BR`` locale gives people, email domains, brands and cities; it has no product
vocabulary in Portuguese (its lorem falls back to Latin), so the catalog words are listed
here. Everything is a function of the seed: the same arguments give the same ids, emails,
SKUs and baskets, which is what lets ``streamshop demo`` run again without adding anything.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from dataclasses import dataclass

from faker import Faker

NAMESPACE = uuid.UUID("5d1c0f4e-8a4b-4f6e-9a51-3c2b7e0d9f10")
"""Namespace of the demo's deterministic ids (uuid5 of seed, kind and index)."""

CATALOG: dict[str, tuple[str, tuple[int, int], list[str], list[str]]] = {
    "Mercearia": (
        "MER",
        (590, 5990),
        [
            "Café torrado e moído",
            "Arroz agulhinha tipo 1",
            "Feijão carioca",
            "Açúcar mascavo",
            "Farinha de mandioca",
            "Azeite extravirgem",
            "Doce de leite",
            "Goiabada cascão",
            "Pão de queijo congelado",
            "Erva-mate para chimarrão",
            "Castanha-do-pará",
            "Tapioca granulada",
        ],
        ["250 g", "500 g", "1 kg", "2 kg", "pacote econômico", "orgânico"],
    ),
    "Bebidas": (
        "BEB",
        (350, 8990),
        [
            "Guaraná",
            "Suco de caju",
            "Cachaça artesanal",
            "Água de coco",
            "Chá mate gelado",
            "Cerveja artesanal",
            "Suco de uva integral",
            "Café solúvel",
        ],
        ["lata 350 ml", "garrafa 600 ml", "1 litro", "2 litros", "caixa com 6", "zero açúcar"],
    ),
    "Casa e Cozinha": (
        "CAS",
        (1990, 39990),
        [
            "Panela de pressão",
            "Jogo de copos",
            "Cafeteira italiana",
            "Toalha de banho",
            "Tábua de corte",
            "Rede de descanso",
            "Jogo de lençol",
            "Frigideira antiaderente",
            "Garrafa térmica",
        ],
        ["inox", "de bambu", "tamanho casal", "4,5 litros", "jogo com 6", "estampada"],
    ),
    "Eletrônicos": (
        "ELE",
        (2990, 49990),
        [
            "Fone de ouvido sem fio",
            "Carregador portátil",
            "Caixa de som Bluetooth",
            "Teclado sem fio",
            "Mouse óptico",
            "Cabo USB-C",
            "Relógio inteligente",
            "Lâmpada inteligente",
        ],
        ["preto", "branco", "10.000 mAh", "2 metros", "bivolt", "com microfone"],
    ),
    "Moda": (
        "MOD",
        (2490, 29990),
        [
            "Camiseta de algodão",
            "Chinelo de borracha",
            "Bermuda jeans",
            "Vestido floral",
            "Boné aba curva",
            "Mochila escolar",
            "Tênis de corrida",
            "Jaqueta corta-vento",
        ],
        ["tamanho P", "tamanho M", "tamanho G", "tamanho GG", "unissex", "infantil"],
    ),
    "Livros": (
        "LIV",
        (1990, 12990),
        [
            "Romance brasileiro",
            "Livro de receitas mineiras",
            "Guia de viagem do Nordeste",
            "Antologia de poesia",
            "História em quadrinhos",
            "Livro de colorir",
        ],
        ["capa comum", "capa dura", "edição de bolso", "edição comentada", "volume 1"],
    ),
    "Beleza e Saúde": (
        "BEL",
        (990, 15990),
        [
            "Protetor solar FPS 50",
            "Sabonete de maracujá",
            "Xampu para cachos",
            "Hidratante corporal",
            "Escova de dentes",
            "Perfume de alfazema",
        ],
        ["100 ml", "200 ml", "kit com 3", "sem perfume", "vegano", "refil"],
    ),
    "Esporte e Lazer": (
        "ESP",
        (2990, 199990),
        [
            "Bola de futebol",
            "Tapete de ioga",
            "Bicicleta aro 29",
            "Prancha de surfe",
            "Raquete de frescobol",
            "Barraca de camping",
        ],
        ["oficial", "para iniciantes", "profissional", "azul", "verde e amarela"],
    ),
    "Brinquedos": (
        "BRI",
        (1490, 24990),
        [
            "Quebra-cabeça 500 peças",
            "Pião de madeira",
            "Carrinho de controle remoto",
            "Boneca de pano",
            "Jogo de tabuleiro",
            "Pipa colorida",
        ],
        ["a partir de 3 anos", "a partir de 8 anos", "edição especial", "para a família"],
    ),
    "Papelaria": (
        "PAP",
        (290, 6990),
        [
            "Caderno universitário",
            "Caneta esferográfica",
            "Agenda 2025",
            "Lápis de cor",
            "Estojo escolar",
            "Marca-texto",
        ],
        ["10 matérias", "caixa com 12", "azul", "kit com 4", "capa dura", "reciclado"],
    ),
}
"""Category → (SKU code, price range in centavos, product nouns, variants)."""

USES = [
    "o dia a dia",
    "presentear quem você gosta",
    "a família toda",
    "viagens e passeios",
    "o café da manhã",
    "quem não abre mão de qualidade",
    "o fim de semana",
]

LINE_COUNT_WEIGHTS = [45, 30, 15, 10]
"""How many lines a basket has (1-4): most orders are small."""
QUANTITY_WEIGHTS = [70, 20, 10]
"""Quantity of a line (1-3)."""


@dataclass(frozen=True, slots=True)
class DemoAccount:
    account_id: str
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class DemoProduct:
    product_id: str
    sku: str
    name: str
    description: str
    category: str
    price: int
    stock: int


@dataclass(frozen=True, slots=True)
class DemoOrder:
    order_id: str
    account_id: str
    lines: tuple[tuple[str, int], ...]
    """(product id, quantity), each product at most once."""


@dataclass(frozen=True, slots=True)
class DemoShop:
    accounts: list[DemoAccount]
    products: list[DemoProduct]
    orders: list[DemoOrder]


def demo_id(seed: int, kind: str, index: int) -> str:
    """A stable id: a second run with the same seed names the same aggregates."""
    return str(uuid.uuid5(NAMESPACE, f"streamshop-demo/{seed}/{kind}/{index}"))


def ascii_slug(text: str) -> str:
    """``"João Conceição"`` → ``"joao.conceicao"``: what people put before the @."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = "".join(c if c.isalnum() else " " for c in plain.lower()).split()
    return ".".join(words) or "cliente"


def category_slug(name: str) -> str:
    """``"Casa e Cozinha"`` → ``"casa-e-cozinha"``: the slug a demo product carries."""
    return ascii_slug(name).replace(".", "-")


CATEGORIES: dict[str, str] = {category_slug(name): name for name in CATALOG}
"""The demo's category tree (all top-level): slug → name, created before the products."""


def _faker(seed: int, salt: int) -> Faker:
    fake = Faker("pt_BR")
    fake.seed_instance(seed * 1000 + salt)
    return fake


def make_accounts(count: int, seed: int) -> list[DemoAccount]:
    """People with pt_BR names; the index in the email keeps emails unique within a seed."""
    fake = _faker(seed, 1)
    accounts = []
    for i in range(count):
        first, last = fake.first_name(), fake.last_name()
        email = f"{ascii_slug(first)}.{ascii_slug(last)}{i}@{fake.free_email_domain()}"
        accounts.append(DemoAccount(demo_id(seed, "account", i), f"{first} {last}", email))
    return accounts


def make_products(count: int, seed: int, stock: int | None = None) -> list[DemoProduct]:
    """A catalog spread over :data:`CATALOG`'s categories with plausible centavo prices.

    ``stock``: opening stock of every product (default: 50-500, varying per product).
    """
    fake = _faker(seed, 2)
    rng = random.Random(seed * 1000 + 2)
    categories = list(CATALOG)
    products = []
    for i in range(count):
        category = categories[i % len(categories)]
        code, (low, high), nouns, variants = CATALOG[category]
        noun, variant = rng.choice(nouns), rng.choice(variants)
        brand = fake.last_name()
        city = f"{fake.city()}/{fake.estado_sigla()}"
        reais = low // 100 + int((high - low) // 100 * rng.random() ** 2)
        price = reais * 100 + 90
        products.append(
            DemoProduct(
                product_id=demo_id(seed, "product", i),
                sku=f"{code}-{seed}-{i:05d}",
                name=f"{noun} {brand} {variant}",
                description=(
                    f"{noun} da marca {brand}, {variant}. Ideal para {rng.choice(USES)}. "
                    f"Produzido em {city}."
                ),
                category=category_slug(category),
                price=price,
                stock=stock if stock is not None else rng.randint(50, 500),
            )
        )
    return products


def make_orders(
    count: int, seed: int, account_ids: list[str], product_ids: list[str]
) -> list[DemoOrder]:
    """Baskets of 1-4 distinct products, a few best sellers and a long tail (Zipf-like)."""
    if count and (not account_ids or not product_ids):
        raise ValueError("orders need at least one account and one product")
    rng = random.Random(seed * 1000 + 3)
    ranked = list(product_ids)
    rng.shuffle(ranked)
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(ranked))]
    orders = []
    for i in range(count):
        size = min(rng.choices(range(1, 5), LINE_COUNT_WEIGHTS)[0], len(ranked))
        chosen: list[str] = []
        while len(chosen) < size:
            product = rng.choices(ranked, weights)[0]
            if product not in chosen:
                chosen.append(product)
        lines = tuple((p, rng.choices(range(1, 4), QUANTITY_WEIGHTS)[0]) for p in chosen)
        orders.append(DemoOrder(demo_id(seed, "order", i), rng.choice(account_ids), lines))
    return orders


def make_shop(
    accounts: int, products: int, orders: int, seed: int = 42, stock: int | None = None
) -> DemoShop:
    """A whole demo shop; the same arguments always give the same shop."""
    shop_accounts = make_accounts(accounts, seed)
    shop_products = make_products(products, seed, stock)
    shop_orders = make_orders(
        orders,
        seed,
        [a.account_id for a in shop_accounts],
        [p.product_id for p in shop_products],
    )
    return DemoShop(shop_accounts, shop_products, shop_orders)
