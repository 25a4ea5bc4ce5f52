import Foundation
import Mustache

/// The console's pages: mustache templates compiled into the binary (no file is read at run
/// time), rendered with HTML escaping of every value. No template uses the unescaped forms
/// (`{{{x}}}`, `{{&x}}`): a test holds them to it. Inline SVG charts are drawn by templates too
/// (numbers only). No inline script or style: the page loads /console/static/console.css and
/// console.js (the Content-Security-Policy allows nothing else).
enum ConsoleTemplates {
    static let sources: [String: String] = [
        "header": header, "footer": footer, "signin": signin, "home": home, "error": error,
        "requests": requests, "request": request, "fulfilled": fulfilled,
        "subject": subject, "budget": budget, "audit": audit, "policy": policy, "keys": keys,
    ]

    /// The compiled library; nil when a template did not parse (then every page is a 500, and
    /// ConsoleSecurityTests fails).
    static let library: MustacheLibrary? = {
        var lib = MustacheLibrary()
        do {
            for (name, text) in sources { try lib.register(text, named: name) }
        } catch {
            return nil
        }
        return lib
    }()

    static func render(_ name: String, _ context: [String: Any]) -> String? {
        library?.render(context, withTemplate: name)
    }

    static let header = """
    <!DOCTYPE html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{{title}} · ProfileVault console</title>
    <link rel="stylesheet" href="/console/static/console.css">
    <script src="/console/static/console.js" defer></script>
    </head>
    <body>
    <a class="skip" href="#main">Skip to content</a>
    <header class="top">
    <p class="brand"><a href="/console/">ProfileVault console</a></p>
    {{#signedIn}}
    <nav aria-label="Console pages"><ul>
    {{#nav}}<li><a href="{{href}}"{{#current}} aria-current="page"{{/current}}>{{label}}</a></li>{{/nav}}
    </ul></nav>
    <form method="post" action="/console/sign-out" class="signout">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <span class="who">Signed in as <strong id="actor">{{actor}}</strong> (role <span id="role">{{role}}</span>)</span>
    <button type="submit">Sign out</button>
    </form>
    {{/signedIn}}
    </header>
    <main id="main">
    <h1>{{title}}</h1>
    {{#flash}}<p class="flash" role="status">{{flash}}</p>{{/flash}}
    {{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}

    """

    static let footer = """
    </main>
    <footer><p>Every action here is checked against your role and written to the audit log, as the JSON API does.</p></footer>
    </body>
    </html>

    """

    static let error = """
    {{>header}}
    <p><a href="/console/">Back to the console</a></p>
    {{>footer}}
    """

    static let signin = """
    {{>header}}
    <p>Sign in with your bearer token (as <code>profilectl tokens add</code> printed it). The console keeps a session for you; the token is not stored in your browser.</p>
    <form method="post" action="/console/sign-in" class="stack">
    <input type="hidden" name="csrf" value="{{signinCSRF}}">
    <label for="token">Bearer token</label>
    <input id="token" name="token" type="password" autocomplete="new-password" required>
    <button type="submit" id="sign-in">Sign in</button>
    </form>
    {{>footer}}
    """

    static let home = """
    {{>header}}
    <p>Your role <strong>{{role}}</strong> may use these pages:</p>
    <ul class="pages">
    {{#nav}}<li><a href="{{href}}">{{label}}</a>: {{about}}</li>{{/nav}}
    </ul>
    {{^nav}}<p>Your role may use no page of the console.</p>{{/nav}}
    {{>footer}}
    """

    static let requests = """
    {{>header}}
    <section aria-labelledby="register-h">
    <h2 id="register-h">Register</h2>
    <form method="get" action="/console/requests" class="inline">
    <label for="status">Show</label>
    <select id="status" name="status">
    {{#filters}}<option value="{{value}}"{{#selected}} selected{{/selected}}>{{label}}</option>{{/filters}}
    </select>
    <button type="submit">Filter</button>
    </form>
    <table id="register">
    <caption>Requests, overdue first, then by due date. Subjects by pseudonym.</caption>
    <thead><tr><th scope="col">Request</th><th scope="col">Type</th><th scope="col">Subject</th><th scope="col">Received</th><th scope="col">Due</th><th scope="col">Days left</th><th scope="col">Status</th><th scope="col">Actions</th></tr></thead>
    <tbody>
    {{#rows}}
    <tr{{#overdue}} class="overdue"{{/overdue}} data-request="{{id}}">
    <td><code>{{id}}</code></td><td>{{type}}</td><td><code title="{{pseudonym}}">{{pseudonymShort}}</code></td><td>{{received}}</td><td>{{due}}{{#extended}} (extended){{/extended}}</td>
    <td>{{daysLeft}}{{#overdue}} <strong class="badge">overdue</strong>{{/overdue}}</td><td>{{status}}</td>
    <td>{{#open}}<a href="/console/requests/{{id}}">Act on {{id}}</a>{{/open}}{{#receipt}}<a href="/console/requests/{{id}}/receipt">Erasure receipt</a>{{/receipt}}{{#outcome}} <span class="outcome">{{outcome}}</span>{{/outcome}}</td>
    </tr>
    {{/rows}}
    </tbody>
    </table>
    {{^rows}}<p id="no-requests">No request matches.</p>{{/rows}}
    </section>
    <section aria-labelledby="open-h">
    <h2 id="open-h">Open a request</h2>
    <form method="post" action="/console/requests" class="stack">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="type">Type</label>
    <select id="type" name="type">{{#types}}<option value="{{.}}">{{.}}</option>{{/types}}</select>
    <label for="customer_id">Customer ID of the subject</label>
    <input id="customer_id" name="customer_id" autocomplete="off" required>
    <label for="received">Received (YYYY-MM-DD, default today)</label>
    <input id="received" name="received" autocomplete="off">
    <label for="channel">Channel</label>
    <select id="channel" name="channel"><option value="">(not given)</option>{{#channels}}<option value="{{.}}">{{.}}</option>{{/channels}}</select>
    <label for="note">Note (sealed)</label>
    <input id="note" name="note" autocomplete="off">
    <button type="submit" id="open-request">Open request</button>
    </form>
    </section>
    {{>footer}}
    """

    static let request = """
    {{>header}}
    {{#r}}
    <dl class="facts">
    <dt>Request</dt><dd><code id="request-id">{{id}}</code></dd>
    <dt>Type</dt><dd id="request-type">{{type}}</dd>
    <dt>Subject (pseudonym)</dt><dd><code>{{pseudonym}}</code></dd>
    <dt>Received</dt><dd>{{received}}</dd>
    <dt>Due</dt><dd>{{due}}{{#extended}} (extended){{/extended}}</dd>
    <dt>Days left</dt><dd>{{daysLeft}}{{#overdue}} <strong class="badge">overdue</strong>{{/overdue}}</dd>
    <dt>Status</dt><dd id="request-status">{{status}}</dd>
    <dt>Opened by</dt><dd>{{openedBy}}</dd>
    </dl>
    {{#open}}
    <section aria-labelledby="fulfil-h">
    <h2 id="fulfil-h">Fulfil</h2>
    <p>{{fulfilHelp}}</p>
    {{#needsSubjectPage}}<p><a id="to-subject" href="/console/subject">Open the Subject page</a></p>{{/needsSubjectPage}}
    <form method="post" action="/console/requests/{{id}}/fulfil" class="stack" data-confirm="Fulfil request {{id}} ({{type}})?">
    <input type="hidden" name="csrf" value="{{csrf}}">
    {{#needsDone}}<div><input type="checkbox" id="done" name="done" value="true"> <label for="done">The rectification was made (rectify ran with the corrected values)</label></div>{{/needsDone}}
    <button type="submit" id="fulfil">Fulfil {{type}} request</button>
    </form>
    </section>
    <section aria-labelledby="extend-h">
    <h2 id="extend-h">Extend</h2>
    {{#extended}}<p>This request was extended once already; it cannot be extended again.</p>{{/extended}}
    {{^extended}}
    <form method="post" action="/console/requests/{{id}}/extend" class="stack">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="extend-reason">Reason for the extension (sealed)</label>
    <input id="extend-reason" name="reason" required autocomplete="off">
    <button type="submit" id="extend">Extend the deadline</button>
    </form>
    {{/extended}}
    </section>
    <section aria-labelledby="deny-h">
    <h2 id="deny-h">Deny</h2>
    <form method="post" action="/console/requests/{{id}}/deny" class="stack" data-confirm="Deny request {{id}}?">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="deny-reason">Reason for the refusal (sealed)</label>
    <input id="deny-reason" name="reason" required autocomplete="off">
    <button type="submit" id="deny">Deny the request</button>
    </form>
    </section>
    {{/open}}
    {{/r}}
    <p><a href="/console/requests">Back to the register</a></p>
    {{>footer}}
    """

    static let fulfilled = """
    {{>header}}
    <dl class="facts">
    <dt>Request</dt><dd><code id="request-id">{{id}}</code></dd>
    <dt>Type</dt><dd>{{type}}</dd>
    <dt>Status</dt><dd id="request-status">{{status}}</dd>
    {{#outcome}}<dt>Outcome</dt><dd><code id="outcome">{{outcome}}</code></dd>{{/outcome}}
    {{#exportSHA256}}<dt>Export SHA-256</dt><dd><code id="export-sha256">{{exportSHA256}}</code></dd>{{/exportSHA256}}
    </dl>
    {{#receipt}}<p><a id="receipt-link" href="/console/requests/{{id}}/receipt">Download the erasure receipt (JSON)</a></p>{{/receipt}}
    {{#export}}
    <section aria-labelledby="export-h">
    <h2 id="export-h">The export to send to the data subject</h2>
    <p>Its SHA-256 is recorded in the register. Send it through the channel the request came by; the subject page also offers it as a self-contained HTML page.</p>
    <pre id="export">{{export}}</pre>
    </section>
    {{/export}}
    <p><a href="/console/requests">Back to the register</a></p>
    {{>footer}}
    """

    static let subject = """
    {{>header}}
    <section aria-labelledby="lookup-h">
    <h2 id="lookup-h">Look up a subject</h2>
    <p>The customer ID is sent in the form body, never in the address, and the look-up is audited.</p>
    <form method="post" action="/console/subject" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="lookup-id">Customer ID</label>
    <input id="lookup-id" name="customer_id" autocomplete="off" required value="{{customerID}}">
    <button type="submit" id="lookup">Look up</button>
    </form>
    </section>
    {{#erased}}
    <section aria-labelledby="state-h">
    <h2 id="state-h">State</h2>
    <p>This subject was erased: no data is held about it. The suppression list keeps only what follows.</p>
    <dl class="facts">
    <dt>Pseudonym</dt><dd><code id="pseudonym">{{pseudonym}}</code></dd>
    <dt>Key</dt><dd id="key-state">shredded</dd>
    <dt>Erased on</dt><dd id="erased-at">{{erasedAt}}</dd>
    <dt>Erasure receipt</dt><dd><code id="erasure-receipt">{{receipt}}</code></dd>
    </dl>
    </section>
    {{/erased}}
    {{#report}}
    <section aria-labelledby="state-h">
    <h2 id="state-h">State</h2>
    <dl class="facts">
    <dt>Pseudonym</dt><dd><code id="pseudonym">{{pseudonym}}</code></dd>
    <dt>Restriction (Art. 18)</dt><dd id="restricted">{{#restricted}}restricted: no purpose applies{{/restricted}}{{^restricted}}not restricted{{/restricted}}</dd>
    <dt>Key</dt><dd id="key-state">active</dd>
    </dl>
    {{#canRestrict}}
    <form method="post" action="/console/subject/restriction" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}">
    <input type="hidden" name="restricted" value="{{restrictTo}}">
    <button type="submit" id="toggle-restriction">{{restrictLabel}}</button>
    </form>
    {{/canRestrict}}
    <form method="post" action="/console/subject/export.html" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}">
    <button type="submit" id="export-html">Download the access export (HTML page)</button>
    </form>
    </section>
    <section aria-labelledby="purposes-h">
    <h2 id="purposes-h">Purposes and consent</h2>
    <table id="purposes">
    <caption>Each purpose of the policy: its legal basis, the subject's consent, and whether it applies now.</caption>
    <thead><tr><th scope="col">Purpose</th><th scope="col">Legal basis</th><th scope="col">Consent</th><th scope="col">Since</th><th scope="col">Applies</th>{{#canConsent}}<th scope="col">Change</th>{{/canConsent}}</tr></thead>
    <tbody>
    {{#purposes}}
    <tr data-purpose="{{name}}"><td>{{name}}</td><td>{{legalBasis}}</td><td class="consent">{{consent}}{{#objection}} (objection){{/objection}}</td><td>{{since}}</td><td>{{#applies}}yes{{/applies}}{{^applies}}no{{/applies}}</td>
    {{#canConsent}}<td>{{#consentRequired}}<form method="post" action="/console/subject/consent" class="inline" data-confirm="{{actionLabel}} for {{name}}?">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}"><input type="hidden" name="purpose" value="{{name}}"><input type="hidden" name="granted" value="{{grantTo}}">
    <button type="submit" class="consent-change" id="consent-{{name}}">{{actionLabel}}</button></form>{{/consentRequired}}{{#canObject}}<form method="post" action="/console/subject/objection" class="inline" data-confirm="Record the subject's objection to {{name}}?">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}"><input type="hidden" name="purpose" value="{{name}}">
    <button type="submit" class="objection" id="object-{{name}}">Record objection</button></form>{{/canObject}}</td>{{/canConsent}}</tr>
    {{/purposes}}
    </tbody>
    </table>
    </section>
    {{#canRectify}}
    <section aria-labelledby="rectify-h">
    <h2 id="rectify-h">Rectify (Art. 16)</h2>
    <p>Set the corrected values the data subject gave. Each is validated as ingest validates it; nothing is written unless all are valid. The values are not shown back: the audit entry names the fields changed. An empty value sets the field to null.</p>
    <form method="post" action="/console/subject/rectify" class="stack" data-confirm="Rectify this subject's data?">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}">
    {{#rectifyRows}}
    <label for="rectify-field-{{n}}">Field {{n}}</label>
    <select id="rectify-field-{{n}}" name="field{{n}}"><option value="">(none)</option>{{#fields}}<option value="{{.}}">{{.}}</option>{{/fields}}</select>
    <label for="rectify-value-{{n}}">Corrected value {{n}}</label>
    <input id="rectify-value-{{n}}" name="value{{n}}" autocomplete="off">
    {{/rectifyRows}}
    <button type="submit" id="rectify">Rectify</button>
    </form>
    </section>
    {{/canRectify}}
    {{#hasTimeline}}
    <section aria-labelledby="timeline-h">
    <h2 id="timeline-h">Consent timeline</h2>
    <table id="timeline">
    <caption>Every consent change, oldest first.</caption>
    <thead><tr><th scope="col">Time</th><th scope="col">Purpose</th><th scope="col">Granted</th><th scope="col">By</th><th scope="col">Source</th><th scope="col">Policy</th></tr></thead>
    <tbody>{{#timeline}}<tr><td>{{time}}</td><td>{{purpose}}</td><td>{{granted}}</td><td>{{actor}}</td><td>{{source}}</td><td>{{policy}}</td></tr>{{/timeline}}</tbody>
    </table>
    </section>
    {{/hasTimeline}}
    <section aria-labelledby="retention-h">
    <h2 id="retention-h">Retention</h2>
    <table id="retention">
    <caption>The retention rules that cover data of this subject, and when each next removes some.</caption>
    <thead><tr><th scope="col">Category</th><th scope="col">Keep</th><th scope="col">After</th><th scope="col">Next removal</th></tr></thead>
    <tbody>{{#retention}}<tr><td>{{category}}</td><td>{{keep}}</td><td>{{after}}</td><td>{{date}}</td></tr>{{/retention}}</tbody>
    </table>
    </section>
    <section aria-labelledby="accesses-h">
    <h2 id="accesses-h">Accesses</h2>
    <table id="accesses">
    <caption>Who touched this subject's data, and when (denied attempts too).</caption>
    <thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Role</th><th scope="col">Action</th><th scope="col">Purpose</th><th scope="col">Outcome</th></tr></thead>
    <tbody>{{#accesses}}<tr><td>{{time}}</td><td>{{actor}}</td><td>{{role}}</td><td>{{action}}</td><td>{{purpose}}</td><td>{{outcome}}</td></tr>{{/accesses}}</tbody>
    </table>
    </section>
    {{/report}}
    {{#canReveal}}{{#customerID}}{{^erased}}
    <section aria-labelledby="reveal-h">
    <h2 id="reveal-h">Reveal the profile</h2>
    <p>Shows the subject's decrypted profile as one purpose may see it. Audited as <code>get</code>, with the purpose.</p>
    <form method="post" action="/console/subject/reveal" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="customer_id" value="{{customerID}}">
    <label for="reveal-purpose">Purpose</label>
    <select id="reveal-purpose" name="purpose">{{#purposeNames}}<option value="{{.}}">{{.}}</option>{{/purposeNames}}</select>
    <button type="submit" id="reveal">Reveal</button>
    </form>
    {{#hasRevealed}}
    <table id="revealed"><caption>The profile as purpose {{revealedPurpose}} sees it.</caption>
    <thead><tr><th scope="col">Field</th><th scope="col">Value</th></tr></thead>
    <tbody>{{#revealed}}<tr><td>{{name}}</td><td>{{value}}</td></tr>{{/revealed}}</tbody></table>
    {{/hasRevealed}}
    </section>
    {{/erased}}{{/customerID}}{{/canReveal}}
    {{>footer}}
    """

    static let budget = """
    {{>header}}
    <p>Budget per purpose in this period: the limit, what releases spent, and what is left, in epsilon, or in rho for a purpose that accounts in zCDP.{{#snapshot}} (Figures only, as <code>/metrics</code> shows them.){{/snapshot}}</p>
    <table id="budget">
    <caption>Differential-privacy budget by purpose.</caption>
    <thead><tr><th scope="col">Purpose</th><th scope="col">Unit</th><th scope="col">Period from</th><th scope="col">Limit</th><th scope="col">Spent</th><th scope="col">Left</th><th scope="col">Delta left</th></tr></thead>
    <tbody>{{#rows}}<tr data-purpose="{{purpose}}"><td>{{purpose}}</td><td class="unit">{{unit}}</td><td>{{periodStart}}</td><td>{{limit}}</td><td>{{spent}}</td><td class="left">{{left}}</td><td>{{deltaLeft}}</td></tr>{{/rows}}</tbody>
    </table>
    {{^rows}}<p>The policy declares no budget.</p>{{/rows}}
    {{#chart}}
    <figure>
    <svg id="budget-chart" role="img" aria-labelledby="chart-title" viewBox="0 0 {{width}} {{height}}" width="{{width}}" height="{{height}}" xmlns="http://www.w3.org/2000/svg">
    <title id="chart-title">Budget left per purpose (share of the limit)</title>
    {{#bars}}
    <text x="0" y="{{textY}}" class="label">{{purpose}}</text>
    <rect x="{{x}}" y="{{y}}" width="{{full}}" height="18" class="limit"></rect>
    <rect x="{{x}}" y="{{y}}" width="{{leftWidth}}" height="18" class="left"></rect>
    <text x="{{valueX}}" y="{{textY}}" class="value">{{leftText}} of {{limitText}} {{unitText}} left</text>
    {{/bars}}
    </svg>
    <figcaption>Dark: budget left this period (epsilon, or rho for a zCDP purpose); light: the period's limit.</figcaption>
    </figure>
    {{/chart}}
    {{#canReleases}}
    <section aria-labelledby="burndown-h">
    <h2 id="burndown-h">Burn-down this period</h2>
    {{#burndown}}
    <figure>
    <svg class="burndown" id="burndown-{{purpose}}" role="img" aria-labelledby="bd-{{purpose}}" viewBox="0 0 560 180" width="560" height="180" xmlns="http://www.w3.org/2000/svg">
    <title id="bd-{{purpose}}">{{unitTitle}} left of {{purpose}} over this period, after each release</title>
    <line x1="40" y1="150" x2="540" y2="150" class="axis"></line>
    <line x1="40" y1="10" x2="40" y2="150" class="axis"></line>
    <text x="0" y="16" class="value">{{limitText}}</text>
    <text x="24" y="154" class="value">0</text>
    <polyline points="{{points}}" class="burn"></polyline>
    <text x="40" y="172" class="value">{{from}}</text>
    <text x="510" y="172" class="value">now</text>
    </svg>
    <figcaption>{{purpose}}: {{unitText}} left after each of this period's {{count}} releases.</figcaption>
    </figure>
    {{/burndown}}
    </section>
    <section aria-labelledby="releases-h">
    <h2 id="releases-h">Releases and refusals</h2>
    <table id="releases">
    <caption>The latest differentially private releases and refused requests, from the audit log (newest first).</caption>
    <thead><tr><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Action</th><th scope="col">Purpose</th><th scope="col">Outcome</th><th scope="col">Detail</th></tr></thead>
    <tbody>{{#releases}}<tr><td>{{time}}</td><td>{{actor}}</td><td>{{action}}</td><td>{{purpose}}</td><td>{{outcome}}</td><td>{{detail}}</td></tr>{{/releases}}</tbody>
    </table>
    </section>
    {{/canReleases}}
    {{>footer}}
    """

    static let audit = """
    {{>header}}
    <section aria-labelledby="head-h">
    <h2 id="head-h">Chain head</h2>
    {{#head}}
    <dl class="facts">
    <dt>Sequence</dt><dd id="head-sequence">{{sequence}}</dd>
    <dt>Hash</dt><dd><code id="head-hash">{{hash}}</code></dd>
    <dt>Signed checkpoint at</dt><dd>{{time}}</dd>
    </dl>
    {{/head}}
    {{^head}}<p>The audit log has no signed head yet.</p>{{/head}}
    <form method="post" action="/console/audit/verify" class="inline">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <button type="submit" id="verify-now">Verify now</button>
    </form>
    {{#verification}}
    <p id="verification" class="{{#ok}}ok{{/ok}}{{^ok}}bad{{/ok}}" role="status">{{summary}}</p>
    {{/verification}}
    </section>
    <section aria-labelledby="upload-h">
    <h2 id="upload-h">Verify an export</h2>
    <p>Paste (or choose) a JSON Lines export and the audit public key (PEM). Nothing is stored. The store's public key is <a href="/console/audit/public-key.pem" download>here</a>.</p>
    <form method="post" action="/console/audit/verify-export" class="stack">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <label for="export-file">Export file (fills the box below)</label>
    <input type="file" id="export-file" data-fill="export-text" accept=".jsonl,.json,.txt">
    <label for="export-text">Export (JSON Lines)</label>
    <textarea id="export-text" name="export" rows="6" required></textarea>
    <label for="key-text">Audit public key (PEM)</label>
    <textarea id="key-text" name="public_key" rows="4" required></textarea>
    <button type="submit" id="verify-export">Verify the export</button>
    </form>
    {{#exportResult}}
    <p id="export-result" class="{{#ok}}ok{{/ok}}{{^ok}}bad{{/ok}}" role="status">{{summary}}</p>
    {{/exportResult}}
    </section>
    <section aria-labelledby="entries-h">
    <h2 id="entries-h">Entries</h2>
    <form method="get" action="/console/audit" class="filters">
    <label for="f-actor">Actor</label><input id="f-actor" name="actor" value="{{f.actor}}">
    <label for="f-action">Action</label><input id="f-action" name="action" value="{{f.action}}">
    <label for="f-purpose">Purpose</label><input id="f-purpose" name="purpose" value="{{f.purpose}}">
    <label for="f-outcome">Outcome</label><input id="f-outcome" name="outcome" value="{{f.outcome}}">
    <label for="f-since">Since (ISO 8601)</label><input id="f-since" name="since" value="{{f.since}}">
    <label for="f-until">Until (ISO 8601)</label><input id="f-until" name="until" value="{{f.until}}">
    <button type="submit" id="filter">Filter</button>
    </form>
    <p>Download this selection (time filters apply; the signed head is included): <a id="download-jsonl" href="/console/audit/export?format=jsonl{{query}}">JSON Lines</a> · <a id="download-csv" href="/console/audit/export?format=csv{{query}}">CSV</a></p>
    <table id="entries">
    <caption>{{shown}} matching entries, newest first (this page read entries {{readFrom}} to {{readTo}} of the log).</caption>
    <thead><tr><th scope="col">Seq</th><th scope="col">Time</th><th scope="col">Actor</th><th scope="col">Role</th><th scope="col">Action</th><th scope="col">Purpose</th><th scope="col">Outcome</th><th scope="col">Subject</th></tr></thead>
    <tbody>{{#entries}}<tr><td>{{seq}}</td><td>{{time}}</td><td>{{actor}}</td><td>{{role}}</td><td>{{action}}</td><td>{{purpose}}</td><td>{{outcome}}</td><td><code>{{subject}}</code></td></tr>{{/entries}}</tbody>
    </table>
    <p class="pager">
    {{#newest}}<a id="page-newest" href="{{newest}}">Newest entries</a>{{/newest}}
    {{#newer}}<a id="page-newer" href="{{newer}}" rel="prev">Newer entries</a>{{/newer}}
    {{#older}}<a id="page-older" href="{{older}}" rel="next">Older entries</a>{{/older}}
    </p>
    </section>
    {{>footer}}
    """

    static let policy = """
    {{>header}}
    <section aria-labelledby="inforce-h">
    <h2 id="inforce-h">In force</h2>
    {{#inForce}}
    <dl class="facts">
    <dt>Version</dt><dd id="policy-version">{{version}}</dd>
    <dt>Applied</dt><dd>{{applied}} by {{actor}} ({{role}})</dd>
    <dt>policy.yaml SHA-256</dt><dd><code>{{sha256}}</code></dd>
    </dl>
    <pre id="policy-summary">{{summary}}</pre>
    {{/inForce}}
    {{^inForce}}<p>No policy has been recorded.</p>{{/inForce}}
    </section>
    <section aria-labelledby="history-h">
    <h2 id="history-h">History</h2>
    <table id="history">
    <caption>Every policy the store has run under, oldest first.</caption>
    <thead><tr><th scope="col">#</th><th scope="col">Version</th><th scope="col">Applied</th><th scope="col">By</th><th scope="col">Changes</th></tr></thead>
    <tbody>{{#history}}<tr><td>{{sequence}}</td><td>{{version}}</td><td>{{applied}}</td><td>{{actor}}</td><td>{{changeCount}}</td></tr>{{/history}}</tbody>
    </table>
    </section>
    <section aria-labelledby="diff-h">
    <h2 id="diff-h">Differences between versions</h2>
    <form method="get" action="/console/policy" class="inline">
    <label for="from">From</label>
    <select id="from" name="from">{{#fromOptions}}<option value="{{sequence}}"{{#selected}} selected{{/selected}}>#{{sequence}} {{version}}</option>{{/fromOptions}}</select>
    <label for="to">To</label>
    <select id="to" name="to">{{#toOptions}}<option value="{{sequence}}"{{#selected}} selected{{/selected}}>#{{sequence}} {{version}}</option>{{/toOptions}}</select>
    <button type="submit" id="diff">Compare</button>
    </form>
    <ul id="changes">{{#changes}}<li>#{{sequence}}: {{text}}</li>{{/changes}}</ul>
    {{^changes}}<p>No change between these versions.</p>{{/changes}}
    </section>
    {{>footer}}
    """

    static let keys = """
    {{>header}}
    <dl class="facts">
    <dt>Active version</dt><dd id="active-version">{{active}}</dd>
    <dt>Identity key version</dt><dd>{{identity}}</dd>
    </dl>
    <table id="versions">
    <caption>Key-encryption key versions, and how many subjects' data keys each wraps.</caption>
    <thead><tr><th scope="col">Version</th><th scope="col">State</th><th scope="col">Subjects</th><th scope="col">Retire</th></tr></thead>
    <tbody>{{#versions}}<tr data-version="{{version}}"><td>{{version}}</td><td>{{state}}</td><td>{{subjects}}</td>
    <td>{{#retirable}}<form method="post" action="/console/keys/retire" class="inline" data-confirm="Retire key version {{version}}? This cannot be undone.">
    <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="version" value="{{version}}">
    <input type="checkbox" id="confirm-retire-{{version}}" name="confirm" value="yes" required> <label for="confirm-retire-{{version}}">I confirm</label>
    <button type="submit" id="retire-{{version}}">Retire version {{version}}</button></form>{{/retirable}}</td></tr>{{/versions}}</tbody>
    </table>
    <section aria-labelledby="rotate-h">
    <h2 id="rotate-h">Rotate</h2>
    <p>Adds a key version, makes it active and re-wraps every data key under it (the keyring file of this node is rewritten; other nodes adopt it).</p>
    <form method="post" action="/console/keys/rotate" class="stack" data-confirm="Rotate the key-encryption key now?">
    <input type="hidden" name="csrf" value="{{csrf}}">
    <div><input type="checkbox" id="confirm-rotate" name="confirm" value="yes" required> <label for="confirm-rotate">I confirm the rotation</label></div>
    <button type="submit" id="rotate">Rotate keys</button>
    </form>
    </section>
    {{>footer}}
    """
}

/// The console's static files, written here and served from /console/static/ (no CDN, no
/// build step).
enum ConsoleStatic {
    static let css = """
    :root { --fg: #1b1b1b; --bg: #fff; --muted: #555; --accent: #0b57d0; --bad: #b00020; --ok: #1e6b2f; }
    * { box-sizing: border-box; }
    body { font-family: system-ui, sans-serif; color: var(--fg); background: var(--bg); margin: 0; line-height: 1.45; }
    .skip { position: absolute; left: -999px; }
    .skip:focus { left: 8px; top: 8px; background: #fff; padding: 4px; }
    header.top { background: #f2f4f8; border-bottom: 1px solid #d0d4dc; padding: 8px 16px; display: flex; flex-wrap: wrap; gap: 12px; align-items: center; }
    .brand { margin: 0; font-weight: 700; }
    .brand a { color: var(--fg); text-decoration: none; }
    nav ul { list-style: none; margin: 0; padding: 0; display: flex; gap: 12px; flex-wrap: wrap; }
    nav a { color: var(--accent); }
    nav a[aria-current="page"] { font-weight: 700; color: var(--fg); }
    .signout { margin-left: auto; }
    main { padding: 16px; max-width: 1200px; }
    footer { padding: 16px; color: var(--muted); font-size: 0.9em; }
    table { border-collapse: collapse; margin: 8px 0 16px; width: 100%; }
    caption { text-align: left; color: var(--muted); padding: 4px 0; }
    th, td { border: 1px solid #d0d4dc; padding: 4px 8px; text-align: left; vertical-align: top; }
    tr.overdue td { background: #fde8eb; }
    .badge { color: #fff; background: var(--bad); padding: 0 6px; border-radius: 4px; }
    .error, .bad { color: var(--bad); font-weight: 600; }
    .flash, .ok { color: var(--ok); font-weight: 600; }
    form.stack { display: grid; gap: 6px; max-width: 560px; }
    form.inline, form.filters { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 4px 0; }
    dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; }
    dl.facts dt { font-weight: 600; }
    dl.facts dd { margin: 0; word-break: break-all; }
    pre { background: #f6f8fa; padding: 8px; overflow: auto; max-height: 480px; }
    button { cursor: pointer; }
    :focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
    svg .limit { fill: #d6e2f8; }
    svg .left { fill: #0b57d0; }
    svg text { font-size: 13px; fill: #1b1b1b; }
    svg .axis { stroke: #555; stroke-width: 1; }
    svg .burn { fill: none; stroke: #b00020; stroke-width: 2; }
    code { font-size: 0.95em; }
    .pager { display: flex; gap: 16px; }
    """

    /// Progressive enhancement only: every page works without it.
    static let js = """
    'use strict';
    // Forms with data-confirm ask before they are sent.
    document.addEventListener('submit', function (event) {
      var form = event.target;
      var question = form.getAttribute('data-confirm');
      if (question && !window.confirm(question)) { event.preventDefault(); }
    });
    // A file input with data-fill="ID" copies the chosen file's text into the textarea ID.
    document.addEventListener('change', function (event) {
      var input = event.target;
      var target = input.getAttribute && input.getAttribute('data-fill');
      if (!target || !input.files || input.files.length === 0) { return; }
      var reader = new FileReader();
      reader.onload = function () { document.getElementById(target).value = String(reader.result); };
      reader.readAsText(input.files[0]);
    });
    """
}

/// What tests check of the templates: they all parse, and none renders a value unescaped.
public enum ConsoleTemplatesProbe {
    public static var allParse: Bool { ConsoleTemplates.library != nil }
    /// The templates that use `{{{` or `{{&` (none may).
    public static var unescapedUses: [String] {
        ConsoleTemplates.sources.filter { $0.value.contains("{{{") || $0.value.contains("{{&") }.map(\.key).sorted()
    }
}
