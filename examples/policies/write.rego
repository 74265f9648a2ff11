# A multi-tenant write policy for the shop of `batpak demo`.
#
# batpak asks data.batpak.write about every proposed write. The answer is
# an object: allow (true: the write may go ahead) and deny (a set of
# reasons, each an object {code, message, ...}; the extra fields become the
# reason's context). A write is admitted when allow is true and deny is
# empty. The input document is described in README.md.
#
# Rules for writes (actions append, batch, fence, import, reaction,
# plugin):
#   - a write needs a principal (id and tenant) of a configured tenant;
#   - a tenant writes only entities prefixed with its id and a colon
#     ("acme:order:1" for tenant acme);
#   - each role may write some kinds (data.batpak.shop.roles; "0x1:*" is
#     every kind of category 0x1);
#   - an order (OrderPlaced, 0x1:0x1) has 1..max_items items, a total_cents
#     that is a positive whole number equal to the items' sum and at most the
#     tenant's max_order_cents, a currency of the tenant's, and an optional
#     note of at most max_note_chars characters;
#   - a payment (PaymentCaptured, 0x2:0x1) has a positive whole amount_cents
#     in a currency of the tenant's;
#   - a plugin writes as the principal that loaded it: it names itself
#     (input.plugin) and is one of the tenant's plugins
#     (data.batpak.shop.tenants[t].plugins); the rules above apply with the
#     loader's tenant and roles, so a tenant's plugin writes only into its
#     own tenant;
#   - system records (action system) are batpak's own: never admitted.
#
# Rules for destructive operations (actions redact, erase, compact):
#   - only a principal with a maintenance role (data.batpak.shop.
#     maintenance_roles) of a configured tenant may run them, with a reason
#     for redact and erase;
#   - every entity whose events they would erase or remove
#     (input.maintenance.entities, and input.maintenance.entity) is the
#     tenant's own.
#
# The input carries the parsed payload, not its size in bytes, so size
# limits are field rules: the number of items and the length of the note.
# Each rule reads single payload fields (input.event.payload.total_cents,
# not input.event.payload as a whole): the decision cache is keyed on the
# fields a policy reads, so narrow reads keep it effective.
package batpak.write

import data.batpak.shop

# Kinds as the store spells them (category:type in hex).
order_placed := "0x1:0x1"

payment_captured := "0x2:0x1"

default allow := false

# Allowed when no rule denies.
allow if count(deny) == 0

# --- who ---

deny contains {
	"code": "NO_PRINCIPAL",
	"message": "the write carries no principal: set principal.id and principal.tenant",
} if {
	not has_principal
}

has_principal if {
	input.principal.id != ""
	input.principal.tenant != ""
}

deny contains {
	"code": "UNKNOWN_TENANT",
	"message": sprintf("tenant %q is not configured", [tenant]),
	"tenant": tenant,
} if {
	tenant := input.principal.tenant
	tenant != ""
	not shop.tenants[tenant]
}

# The actions that write events; the others are destructive operations
# (redact, erase, compact) and system records.
write_actions := {"append", "batch", "fence", "import", "reaction", "plugin"}

maintenance_actions := {"redact", "erase", "compact"}

writing if input.action in write_actions

# --- where: a tenant's own entities ---

deny contains {
	"code": "TENANT_MISMATCH",
	"message": sprintf("tenant %q may write only entities prefixed %q, not %q", [tenant, prefix, entity]),
	"tenant": tenant,
	"entity": entity,
} if {
	writing
	tenant := input.principal.tenant
	tenant != ""
	prefix := concat("", [tenant, ":"])
	entity := input.event.entity
	not startswith(entity, prefix)
}

# --- what: kinds per role ---

deny contains {
	"code": "KIND_NOT_ALLOWED",
	"message": sprintf("no role of %v may write kind %s", [roles, kind]),
	"kind": kind,
	"roles": roles,
} if {
	writing
	not kind_allowed
	kind := input.event.kind
	roles := input.principal.roles
}

kind_allowed if {
	some role in input.principal.roles
	some pattern in shop.roles[role]
	kind_matches(pattern, input.event.kind)
}

kind_matches(pattern, kind) if pattern == kind

kind_matches(pattern, kind) if {
	endswith(pattern, ":*")
	startswith(kind, trim_suffix(pattern, "*"))
}

# --- orders ---

deny contains {
	"code": "INVALID_TOTAL",
	"message": "an order needs total_cents",
	"field": "total_cents",
} if {
	input.event.kind == order_placed
	not has_total
}

has_total if {
	_ := input.event.payload.total_cents
}

deny contains {
	"code": "INVALID_TOTAL",
	"message": sprintf("total_cents must be a positive whole number of cents, not %v", [total]),
	"field": "total_cents",
} if {
	input.event.kind == order_placed
	total := input.event.payload.total_cents
	not positive_whole(total)
}

deny contains {
	"code": "ORDER_OVER_LIMIT",
	"message": sprintf("total_cents %v is over tenant %q's limit of %v", [total, tenant, limit]),
	"field": "total_cents",
	"limit": limit,
} if {
	input.event.kind == order_placed
	total := input.event.payload.total_cents
	positive_whole(total)
	tenant := input.principal.tenant
	limit := shop.tenants[tenant].max_order_cents
	total > limit
}

deny contains {
	"code": "TOTAL_MISMATCH",
	"message": sprintf("total_cents %v is not the items' sum of qty × price_cents (%v)", [total, sum_cents]),
	"field": "total_cents",
	"items_cents": sum_cents,
} if {
	input.event.kind == order_placed
	total := input.event.payload.total_cents
	positive_whole(total)
	count(items) > 0
	every it in items {
		valid_item(it)
	}
	sum_cents := sum([c | some it in items; c := it.qty * it.price_cents])
	total != sum_cents
}

deny contains {
	"code": "NO_ITEMS",
	"message": "an order needs a non-empty items list",
	"field": "items",
} if {
	input.event.kind == order_placed
	count(items) == 0
}

deny contains {
	"code": "TOO_MANY_ITEMS",
	"message": sprintf("an order has at most %d items, this one has %d", [limit, n]),
	"field": "items",
	"limit": limit,
} if {
	input.event.kind == order_placed
	n := count(items)
	limit := shop.limits.max_items
	n > limit
}

deny contains {
	"code": "INVALID_ITEM",
	"message": sprintf("item %d needs a positive whole qty and price_cents", [i]),
	"field": sprintf("items[%d]", [i]),
} if {
	input.event.kind == order_placed
	some i, it in items
	not valid_item(it)
}

# items is the payload's items when it is an array, else empty.
items := input.event.payload.items if {
	is_array(input.event.payload.items)
} else := []

valid_item(it) if {
	positive_whole(it.qty)
	positive_whole(it.price_cents)
}

deny contains {
	"code": "NOTE_TOO_LONG",
	"message": sprintf("note has %d characters, at most %d are allowed", [n, limit]),
	"field": "note",
	"limit": limit,
} if {
	input.event.kind == order_placed
	is_string(input.event.payload.note)
	n := count(input.event.payload.note)
	limit := shop.limits.max_note_chars
	n > limit
}

# --- payments ---

deny contains {
	"code": "INVALID_AMOUNT",
	"message": "amount_cents must be a positive whole number of cents",
	"field": "amount_cents",
} if {
	input.event.kind == payment_captured
	not valid_amount
}

# A separate rule, so that a missing amount_cents is invalid too: in
# `not positive_whole(input.event.payload.amount_cents)` an undefined
# argument would make the whole expression fail, not the `not` succeed.
valid_amount if positive_whole(input.event.payload.amount_cents)

# --- both ---

deny contains {
	"code": "CURRENCY_NOT_ALLOWED",
	"message": sprintf("tenant %q trades in %v, not %s", [tenant, currencies, json.marshal(currency)]),
	"currency": currency,
	"field": "currency",
} if {
	input.event.kind in {order_placed, payment_captured}
	tenant := input.principal.tenant
	currencies := shop.tenants[tenant].currencies
	not currency in currencies
}

# currency is the payload's currency, null when it has none.
currency := input.event.payload.currency if {
	is_string(input.event.payload.currency)
} else := null

positive_whole(x) if {
	is_number(x)
	x > 0
	x == floor(x)
}

# --- plugins: a tenant's plugin writes as the tenant that loaded it ---

deny contains {
	"code": "NO_PLUGIN",
	"message": "a plugin write names no plugin (input.plugin.name)",
} if {
	input.action == "plugin"
	not has_plugin
}

has_plugin if input.plugin.name != ""

deny contains {
	"code": "PLUGIN_NOT_ALLOWED",
	"message": sprintf("plugin %q is not one of tenant %q's plugins %v", [name, tenant, plugins]),
	"plugin": name,
	"tenant": tenant,
} if {
	input.action == "plugin"
	name := input.plugin.name
	name != ""
	tenant := input.principal.tenant
	plugins := object.get(shop.tenants, [tenant, "plugins"], [])
	not name in plugins
}

# --- system records are batpak's own ---

deny contains {
	"code": "SYSTEM_WRITE",
	"message": "system records are written by batpak itself, not by applications",
} if {
	input.action == "system"
}

# --- destructive operations: redact, erase, compact ---

deny contains {
	"code": "MAINTENANCE_NOT_ALLOWED",
	"message": sprintf("%s needs one of the roles %v; %v has none", [input.action, shop.maintenance_roles, roles]),
	"roles": roles,
} if {
	input.action in maintenance_actions
	not maintainer
	roles := input.principal.roles
}

maintainer if {
	some role in input.principal.roles
	role in shop.maintenance_roles
}

deny contains {
	"code": "NO_REASON",
	"message": sprintf("%s erases data: give a reason", [input.action]),
} if {
	input.action in {"redact", "erase"}
	not has_reason
}

has_reason if input.maintenance.reason != ""

deny contains {
	"code": "TENANT_MISMATCH",
	"message": sprintf("tenant %q may %s only entities prefixed %q, not %q", [tenant, input.action, prefix, entity]),
	"tenant": tenant,
	"entity": entity,
} if {
	input.action in maintenance_actions
	tenant := input.principal.tenant
	tenant != ""
	prefix := concat("", [tenant, ":"])
	some entity in maintained_entities
	not startswith(entity, prefix)
}

# maintained_entities: every entity the operation would erase or remove
# events of, and the entity asked for.
maintained_entities contains entity if {
	some entity, _ in input.maintenance.entities
}

maintained_entities contains entity if {
	entity := input.maintenance.entity
	is_string(entity)
	entity != ""
}
