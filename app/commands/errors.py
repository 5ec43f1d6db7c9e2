"""Named domain errors of the write side; ``app.problems`` maps each to one problem+json answer.

Every error carries an HTTP ``status``, a stable ``slug`` (the problem ``type``), a human
``detail`` and, when one input is at fault, the ``field`` naming it.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A command was refused for a reason the caller can act on; nothing was appended."""

    status: ClassVar[int] = 422
    slug: ClassVar[str] = "domain-error"
    title: ClassVar[str] = "Command refused"

    def __init__(self, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = extra


class InvalidCommand(DomainError):
    """A field broke its constraint; the same problem type as a malformed HTTP body field."""

    status = 400
    slug = "validation-error"
    title = "Invalid request"


class DuplicateEmail(DomainError):
    status = 409
    slug = "duplicate-email"
    title = "Email already registered"


class AccountAlreadyExists(DomainError):
    status = 409
    slug = "account-exists"
    title = "Account already exists"


class AccountNotFound(DomainError):
    slug = "account-not-found"
    title = "Account not found"


class InvalidCredentials(DomainError):
    """One answer for an unknown email and a wrong password, so neither can be told apart."""

    status = 401
    slug = "invalid-credentials"
    title = "Invalid credentials"


class RateLimited(DomainError):
    status = 429
    slug = "rate-limited"
    title = "Too many attempts"

    def __init__(self, detail: str, *, retry_after: int, field: str | None = None) -> None:
        super().__init__(detail, field=field)
        self.retry_after = max(1, retry_after)


class DuplicateSku(DomainError):
    status = 409
    slug = "duplicate-sku"
    title = "SKU already in the catalog"


class DuplicateLegacyId(DomainError):
    status = 409
    slug = "duplicate-legacy-id"
    title = "Legacy id already mapped"


class ProductAlreadyExists(DomainError):
    status = 409
    slug = "product-exists"
    title = "Product already exists"


class ProductNotFound(DomainError):
    """A catalog command named a product that does not exist (or was deleted)."""

    status = 404
    slug = "product-not-found"
    title = "Product not found"


class EmptyUpdate(DomainError):
    slug = "empty-update"
    title = "Nothing to update"


class UnknownProduct(DomainError):
    """An order line named a product that does not exist or was deleted."""

    slug = "unknown-product"
    title = "Unknown product"


class OrderAlreadyExists(DomainError):
    status = 409
    slug = "order-exists"
    title = "Order already exists"


class OrderNotFound(DomainError):
    """No such order, or not one of the caller's (the two are not told apart)."""

    status = 404
    slug = "order-not-found"
    title = "Order not found"


class OrderNotCancellable(DomainError):
    """A cancellation the order's status (or a shipment) does not allow; like every other
    refused step it names ``current_status``."""

    status = 409
    slug = "order-not-cancellable"
    title = "Order cannot be cancelled"


class InsufficientStock(DomainError):
    status = 409
    slug = "insufficient-stock"
    title = "Insufficient stock"

    @classmethod
    def for_delta(cls, product_id: str, stock: int, removing: int) -> InsufficientStock:
        """A stock delta's refusal, whether the decision or the append's guard saw it."""
        return cls(
            f"product {product_id} has {stock} in stock, cannot remove {removing}",
            field="delta",
            product_id=product_id,
        )


class MixedCurrencies(DomainError):
    slug = "mixed-currencies"
    title = "Products priced in different currencies"


class IdempotencyKeyReused(DomainError):
    slug = "idempotency-key-reused"
    title = "Idempotency key reused with a different request"


class ConcurrentModification(DomainError):
    """Optimistic retries ran out: other writers kept changing the same aggregate."""

    status = 409
    slug = "concurrent-modification"
    title = "Concurrent modification"


class Forbidden(DomainError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class InvalidTransition(DomainError):
    """The order's current status does not allow this step; ``current_status`` names it."""

    status = 409
    slug = "invalid-transition"
    title = "Not allowed in the order's current status"


class EmptyCart(DomainError):
    status = 409
    slug = "empty-cart"
    title = "The cart is empty"


class RefundTooLarge(DomainError):
    status = 409
    slug = "refund-too-large"
    title = "Refund above what is left of the captured amount"


class PaymentDeclined(DomainError):
    """The acquirer refused the card; the order stays payable."""

    status = 402
    slug = "payment-declined"
    title = "Payment declined"


class PaymentTimedOut(DomainError):
    """The acquirer did not answer; nothing was recorded and the order stays payable (a
    retry reuses the same provider idempotency key, so it cannot charge twice)."""

    status = 504
    slug = "payment-timeout"
    title = "Payment provider timed out"


# -- sellers and categories (issue 15) --


class UnknownCategory(DomainError):
    """A product (or a category's ``parent``) named a slug that is not in the category tree."""

    slug = "unknown-category"
    title = "Unknown category"


class CategoryAlreadyExists(DomainError):
    status = 409
    slug = "category-exists"
    title = "Category already exists"


class CategoryNotFound(DomainError):
    status = 404
    slug = "category-not-found"
    title = "Category not found"


class CategoryInUse(DomainError):
    """Deleting a category that live products name or other categories sit under."""

    status = 409
    slug = "category-in-use"
    title = "Category is not empty"


class NotASeller(DomainError):
    """A product was assigned to an account that is not a seller."""

    slug = "not-a-seller"
    title = "Not a seller"
